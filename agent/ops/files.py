"""Durable files: what a crash-safe write needs after ``write`` and ``rename``."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_path(path: str | Path) -> None:
    """Flush a file, or a directory (so a rename or a new name in it survives a power loss), to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

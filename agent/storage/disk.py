"""The data directory's file-system side: who holds it, how full it is, and the room kept for deleting.

- :class:`DataDirLock`: a POSIX record lock on ``targets.lock`` held while a store is open, so that
  ``vcs-edge outbox purge`` refuses to work under a running agent (the file holds the holder's pid).
- :class:`Reserve`: a pre-allocated file (``reserve.bin``) released when the disk is full, so that SQLite has room
  for the DELETE and the WAL checkpoint that free space, and re-created when there is room again.
- :func:`clean_temp_files`: the ``*.tmp`` files of interrupted media writes.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import shutil
import sqlite3
import time
from pathlib import Path

log = logging.getLogger("agent.storage.store")

LOCK_FILE = "targets.lock"
RESERVE_FILE = "reserve.bin"


class StoreUnavailable(OSError):
    """The store cannot take targets now (disk or database full); already counted and logged by the store."""


class DataDirLocked(RuntimeError):
    """Another process (a running agent) holds the data directory."""


class DataDirLock:
    """Exclusive use of a data directory by one process. POSIX locks are per process: a second store opened in
    the same process does not conflict (tests reopen stores), another process does."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise DataDirLocked(
                f"{self.path.parent} is in use by another process (pid {holder}); stop the agent first"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the lock
            self._fd = None


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC/EDQUOT from a file write, or SQLite's ``database or disk is full``."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(exc, sqlite3.OperationalError) and "full" in str(exc)


def free_bytes(path: Path) -> int:
    return int(shutil.disk_usage(path).free)


class Reserve:
    """``size`` bytes really allocated on the data disk (``posix_fallocate``), given back on demand."""

    def __init__(self, data_dir: Path, size: int) -> None:
        self.path = data_dir / RESERVE_FILE
        self.size = size

    def ensure(self, floor: int) -> None:
        """(Re)create the file when missing or of another size, if that leaves ``floor`` bytes free; until then
        the room stays free for records (the disk is taken by something else)."""
        try:
            if self.size <= 0:
                self.path.unlink(missing_ok=True)
                return
            if self.path.exists() and self.path.stat().st_size == self.size:
                return
            self.path.unlink(missing_ok=True)
            if free_bytes(self.path.parent) < self.size + floor:
                return
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.size)
            finally:
                os.close(fd)
        except OSError as exc:
            self.path.unlink(missing_ok=True)
            log.debug("store: reserve file not created now: %s", exc)

    def release(self) -> bool:
        """Delete the file so that a DELETE and a checkpoint have room; True if there was one."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        return True


def clean_temp_files(root: Path, min_age_s: float = 60.0) -> int:
    """Remove ``*.tmp`` files under ``root`` older than ``min_age_s`` (0: all, at start), so that a write in
    progress is never pulled from under its writer. Returns how many."""
    n = 0
    cutoff = time.time() - min_age_s
    for tmp in root.rglob("*.tmp"):
        try:
            if min_age_s > 0 and tmp.stat().st_mtime > cutoff:
                continue
            tmp.unlink()
            n += 1
        except OSError:
            continue
    if n:
        log.info("store: removed %d temporary media files", n)
    return n

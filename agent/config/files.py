"""Checks of the files a site file names (TLS certificates and keys), made at load time so that what
``config check`` accepts, ``run`` can open: a missing or unreadable file is a located config error, not a
FileNotFoundError at start. Relative paths are taken from the working directory, as ``run`` does.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path


def readable_file(path: str | None) -> str | None:
    """``path`` when it names a readable regular file, else ValueError saying what is wrong."""
    if path is None:
        return None
    p = Path(path)
    if not p.exists():
        raise ValueError(f"{path!r}: no such file (relative paths start at {os.getcwd()!r})")
    if not p.is_file():
        raise ValueError(f"{path!r} is not a regular file")
    if not os.access(p, os.R_OK):
        raise ValueError(f"{path!r} is not readable by this user")
    return path


def _no_passphrase() -> bytes:
    raise ValueError(
        "the key is encrypted; the agent cannot ask for its passphrase, so give an unencrypted key"
    )


def check_cert_pair(cert: str, key: str | None, what: str) -> None:
    """ValueError unless ``cert`` (PEM chain) and ``key`` load together, as the server or client will load them."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        ctx.load_cert_chain(cert, key, password=_no_passphrase)
    except ssl.SSLError as exc:
        raise ValueError(f"{what} cannot be used: {exc.reason or exc}") from None
    except OSError as exc:
        raise ValueError(f"{what} cannot be read: {exc.strerror}") from None


def check_ca_bundle(path: str, what: str) -> None:
    """ValueError unless ``path`` is a PEM bundle of CA certificates."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        ctx.load_verify_locations(cafile=path)
    except ssl.SSLError as exc:
        raise ValueError(f"{what} is not a PEM bundle of certificates: {exc.reason or exc}") from None
    except OSError as exc:
        raise ValueError(f"{what} cannot be read: {exc.strerror}") from None

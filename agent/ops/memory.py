"""glibc's malloc arenas, capped when the agent starts, before the stream and detector threads exist.

glibc gives a thread that finds the arenas locked a new one, up to 8 per core, and a freed block stays in the
arena it came from; with a pull thread per camera plus the detector and writer threads the agent's RSS grew by
a quarter for nothing (``bench.capacity`` at 32 cameras, in turn: 1158 MB with glibc's default, 882 MB with 2
arenas, the same latency and CPU). ``MALLOC_ARENA_MAX`` in the environment, when set, is left to glibc.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Mapping

#: mallopt's parameter number for the arena cap (glibc malloc.h)
M_ARENA_MAX = -8
ARENAS = 2


def cap_malloc_arenas(arenas: int = ARENAS, env: Mapping[str, str] | None = None) -> bool:
    """Cap glibc's malloc arenas; False when the environment sets its own cap or the C library is not glibc."""
    if (os.environ if env is None else env).get("MALLOC_ARENA_MAX"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt, and no per-thread arenas to cap
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, arenas))

"""The agent caps glibc's malloc arenas at start (agent.ops.memory); counted with glibc's own malloc_info."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agent.ops.memory import cap_malloc_arenas

# Many threads allocating at once, then the number of arenas as glibc reports it (<heap nr=...> elements).
PROBE = textwrap.dedent(
    """
    import ctypes, sys, threading
    from agent.ops.memory import cap_malloc_arenas
    if sys.argv[1] == "cap":
        assert cap_malloc_arenas()
    barrier = threading.Barrier(16)
    def work():
        barrier.wait()
        for _ in range(2000):
            blocks = [bytearray(4096) for _ in range(16)]
            del blocks
    threads = [threading.Thread(target=work) for _ in range(16)]
    for t in threads: t.start()
    for t in threads: t.join()
    libc = ctypes.CDLL(None)
    libc.fopen.restype = ctypes.c_void_p
    libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    fp = libc.fopen(sys.argv[2].encode(), b"w")
    libc.malloc_info(0, fp)
    libc.fclose(fp)
    """
)


def _arenas(tmp_path: Path, mode: str) -> int:
    out = tmp_path / f"{mode}.xml"
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    subprocess.run([sys.executable, "-c", PROBE, mode, str(out)], check=True, env=env, timeout=60)
    return out.read_text().count("<heap nr=")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_capped_arenas_stay_two_where_glibc_would_make_many(tmp_path: Path) -> None:
    assert _arenas(tmp_path, "cap") <= 2
    assert _arenas(tmp_path, "default") > 2  # the probe does make glibc open more arenas


def test_an_arena_cap_in_the_environment_is_left_alone() -> None:
    assert not cap_malloc_arenas(env={"MALLOC_ARENA_MAX": "4"})

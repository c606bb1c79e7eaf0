"""Running the real ``vcs-edge`` CLI on real files, for the site-file tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

CLI = [sys.executable, "-m", "agent.cli"]


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    #: CPU seconds (user + system) of the child: its work, whatever else the machine runs
    cpu_seconds: float
    #: peak RSS of the child in bytes (ru_maxrss of RUSAGE_CHILDREN, measured in a fresh runner process)
    max_rss: int

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


_RUNNER = """
import resource, subprocess, sys, time, json
t = time.monotonic()
p = subprocess.run(sys.argv[1:], capture_output=True, text=True)
dt = time.monotonic() - t
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
doc = {"rc": p.returncode, "out": p.stdout, "err": p.stderr, "s": dt, "cpu": ru.ru_utime + ru.ru_stime}
print(json.dumps({**doc, "rss": ru.ru_maxrss * 1024}))
"""


def config_check(
    path: Path, env: dict[str, str] | None = None, timeout: float = 60, cwd: Path | None = None
) -> Result:
    """``vcs-edge config check -c PATH`` in a subprocess, with its time and peak memory.

    The check runs under a small runner process so that RUSAGE_CHILDREN holds this one child only.
    """
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("SECRET", "CAM_", "VCS_"))}
    full_env.update(env or {})
    res = subprocess.run(
        [sys.executable, "-c", _RUNNER, *CLI, "config", "check", "-c", str(path)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        check=True,
        cwd=cwd,
    )
    doc = json.loads(res.stdout)
    return Result(doc["rc"], doc["out"], doc["err"], doc["s"], doc["cpu"], doc["rss"])

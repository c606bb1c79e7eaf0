"""``python -m bench.watch --json`` in miniature: its last line has the keys the README reports, nothing lost."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.peers.tansu import require_tansu


@pytest.mark.peer
def test_bench_watch_keys() -> None:
    require_tansu()
    proc = subprocess.run(
        [sys.executable, "-m", "bench.watch", "--json", "--seconds", "4", "--outage", "1", "--rate", "10"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"alerts", "lost", "p99_ms", "targets", "p99_ms_outage"} <= set(result)
    assert result["lost"] == 0 and result["targets"] >= 30 and result["alerts"] >= 15

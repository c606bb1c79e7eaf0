"""Smoke test of ``python -m bench.search --json`` on 10 000 vectors (the real run is 1M, outside the suite)."""

from __future__ import annotations

import json

import pytest

from bench import search


def test_bench_search_prints_its_figures(capsys: pytest.CaptureFixture[str]) -> None:
    assert search.main(["--n", "10000", "--queries", "20", "--json"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("vectors", "p99_ms", "recall_at_10", "index_mb", "build_s", "selective_recall_at_10"):
        assert key in last, key
    assert last["vectors"] == 10000
    assert last["recall_at_10"] >= 0.95 and last["selective_recall_at_10"] >= 0.95
    assert 0 < last["index_mb"] < 10

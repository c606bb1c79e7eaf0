"""The persisted nonce store (window, pruning, bound, a clock stepped back, a second process) and the text log
format's escaping, as units with explicit times and records."""

from __future__ import annotations

import io
import json
import logging
import sqlite3
from pathlib import Path

from agent.api.nonces import DB_FILE, NonceStore
from agent.ops import logs

SKEW = 900.0
T0 = 1_800_000_000.0


def test_a_nonce_is_refused_for_its_whole_window_then_pruned(tmp_path: Path) -> None:
    store = NonceStore(tmp_path, SKEW)
    assert store.add("k\nn1", T0, T0) is True
    assert store.add("k\nn1", T0, T0 + 1) is False
    assert store.add("k\nn1", T0, T0 + SKEW) is False  # still acceptable by its Timestamp: still refused
    assert store.add("k\nn1", T0, T0 + 2 * SKEW - 1) is False  # a clock stepped back one window: still
    assert store.add("other\nn1", T0, T0 + 1) is True  # nonces are per AccessKey
    store.add("k\nn2", T0 + 3 * SKEW, T0 + 3 * SKEW)  # pruning happens on the way
    assert len(store) == 1
    store.close()


def test_nonces_survive_reopening_and_are_shared_between_processes(tmp_path: Path) -> None:
    first = NonceStore(tmp_path, SKEW)
    assert first.add("k\nabc", T0, T0) is True
    second = NonceStore(tmp_path, SKEW)  # another process, or the agent after a restart
    assert second.add("k\nabc", T0, T0 + 5) is False
    assert second.add("k\nfresh", T0, T0 + 5) is True
    assert first.add("k\nfresh", T0, T0 + 6) is False
    first.close()
    second.close()
    rows = sqlite3.connect(tmp_path / DB_FILE).execute("SELECT COUNT(*) FROM nonces").fetchone()
    assert rows == (2,)


def test_a_full_store_refuses_rather_than_forgets(tmp_path: Path) -> None:
    store = NonceStore(tmp_path, SKEW, max_entries=3)
    for i in range(3):
        assert store.add(f"k\n{i}", T0, T0) is True
    assert store.add("k\n3", T0, T0 + 1) is None  # full of live nonces
    assert store.add("k\n0", T0, T0 + 1) is False  # and the old ones are still refused
    assert store.add("k\n3", T0, T0 + 2 * SKEW + 1) is True  # once they expire, room again
    store.close()


def _text(msg: str, *args: object, exc: bool = False, **fields: object) -> str:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs._Text())
    log = logging.getLogger("vcs_edge.test_escape")
    log.addHandler(handler)
    log.propagate = False
    try:
        if exc:
            try:
                raise ValueError("bad\n00:00:00 E vcs_edge.api: forged from an exception")
            except ValueError:
                log.exception(msg, *args, extra=logs.kv(**fields))
        else:
            log.warning(msg, *args, extra=logs.kv(**fields))
    finally:
        log.removeHandler(handler)
    return out.getvalue()


def test_text_format_keeps_every_event_on_one_line() -> None:
    evil = "a\nb\rc\x1b[31md\x00e\x85f\u2028g\u2029h\u202ei\tj\x7fk"
    line = _text("API %s refused", evil, device=evil)
    assert line.count("\n") == 1 and line.endswith("\n")
    assert "a\\nb\\rc\\x1b[31md\\x00e\\x85f\\u2028g\\u2029h\\u202ei\\tj\\x7fk" in line
    assert "device=a\\nb" in line
    for ch in "\r\x1b\x00\x85\u2028\u2029\u202e\x7f":
        assert ch not in line
    # a traceback keeps its lines, each indented: none can pass for a log line
    text = _text("failed", exc=True)
    first, *rest = text.rstrip("\n").split("\n")
    assert first.endswith("failed") and rest
    assert all(r.startswith("  ") for r in rest)
    assert not any(r.startswith("00:00:00") for r in rest)


def test_json_format_escapes_line_breaks_too() -> None:
    record = logging.LogRecord("vcs_edge.t", logging.INFO, __file__, 1, "x %s", ("a\nb\u2028",), None)
    text = logs._Json().format(record)
    assert "\n" not in text and "\u2028" not in text and '"msg": "x a\\nb\\u2028"' in text
    assert json.loads(text)["msg"] == "x a\nb\u2028"

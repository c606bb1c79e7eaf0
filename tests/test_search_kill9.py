"""kill -9 of a real agent while it stores embedded faces and bodies, then a restart: the vector indexes match
the store.

The agent runs as its own process (``python -m agent.cli run``) on people walking in OpenCV's vtest.avi served
over RTSP on loopback, with the ``face_body`` algorithm: real body detection, faces found in the head regions,
SFace embeddings, bodies with their appearance vectors, stored in SQLite. It is killed with SIGKILL while
targets are being stored (its indexes were never saved), restarted (the indexes are replayed from the table),
left to store more, then stopped normally (the indexes are saved). Afterwards, for faces and for bodies: the saved index holds exactly the stored rows of
that type that have a vector, every one of them is found by its own vector, and targets then removed by
retention are never returned, also after a crash before the next save.
"""

from __future__ import annotations

import re
import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from agent.search.index import VectorIndex
from agent.storage.store import TargetStore
from tests.peers import wait_until
from tests.storage.conftest import free_port
from tests.test_delivery import CAM, AgentProcess, camera

__all__ = ["camera"]


def site(http_port: int, url: str) -> str:
    return f"""
site: {{name: kill9, timezone: UTC}}
agent:
  data_dir: data
  http: {{host: 127.0.0.1, port: {http_port}}}
streams: {{mode: 1, stall_timeout_s: 4, backoff_base_s: 0.2, backoff_cap_s: 1}}
devices:
  - {{id: "{CAM}", name: square, frame_rate: 10, gop: 20, stream: {{main: "{url}"}}}}
detection:
  track_max_missed_s: 1.0
  track_max_age_s: 3
instances:
  - {{id: people, name: people, algorithm_id: face_body, spf: 1, cameras: ["{CAM}"]}}
"""


#: the types stored with a vector, and its size (SFace; the body appearance vector)
TYPES = {"Face": 128, "Body": 72}


def embedded(work: Path, ttype: str = "Face") -> dict[int, bytes]:
    path = work / "data" / "targets.db"
    if not path.exists():
        return {}
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            rows = db.execute(
                "SELECT seq, emb FROM targets WHERE emb_dim > 0 AND target_type = ?", (ttype,)
            ).fetchall()
    except sqlite3.OperationalError:  # the agent has not made its tables yet
        return {}
    return {int(s): bytes(e) for s, e in rows}


@pytest.mark.timeout(600)  # real detection on a shared 2-core box: the first faces can take a minute or more
def test_kill9_while_storing_leaves_index_and_store_consistent(tmp_path: Path, camera: str) -> None:
    work = tmp_path / "agent"
    work.mkdir()
    http_port = free_port()
    (work / "site.yaml").write_text(site(http_port, camera))
    log = work / "agent.log"

    agent = AgentProcess(work, http_port)
    try:
        assert wait_until(lambda: len(embedded(work)) >= 2 and len(embedded(work, "Body")) >= 1, 240), (
            log.read_text()[-3000:]
        )
        agent.kill9()
    finally:
        agent.stop()
    before = {t: embedded(work, t) for t in TYPES}
    assert before["Body"], "bodies are stored with their appearance vector"
    for t in TYPES:
        assert not (work / "data" / "vectors" / t / "index.json").exists()  # never saved before the kill

    agent = AgentProcess(work, http_port)
    try:
        # the restarted agent replays every stored vector into its index, then goes on storing
        assert wait_until(
            lambda: re.search(r"vector index Face: \d+ vectors", log.read_text()) is not None, 90
        )
        assert re.search(r"vector index Body: \d+ vectors", log.read_text()) is not None
        assert wait_until(lambda: len(embedded(work)) > len(before["Face"]), 240), log.read_text()[-3000:]
    finally:
        agent.stop()  # SIGTERM: the index is saved at close
    rows = {t: embedded(work, t) for t in TYPES}
    for t, dim in TYPES.items():
        assert set(before[t]) <= set(rows[t])
        saved = VectorIndex(work / "data" / "vectors" / t, dim)
        assert saved.ids() == set(rows[t]), f"the saved {t} index must hold exactly its rows with a vector"
        saved.close()

    store = TargetStore(work / "data", sinks=())
    try:
        for t in TYPES:
            for seq, blob in rows[t].items():
                q = np.frombuffer(blob, dtype="<f4")
                hit = store.search(target_type=t, query_embedding=q, page_size=1).hits
                assert hit and hit[0].similarity is not None and hit[0].similarity > 0.99, (t, seq)
        # retention removes the older half; then a crash before the index is saved again
        with closing(sqlite3.connect(work / "data" / "targets.db")) as db:
            times = sorted(
                int(t)
                for (t,) in db.execute("SELECT ts_ms FROM targets WHERE emb_dim > 0 AND target_type = 'Face'")
            )
        cut = datetime.fromtimestamp(times[len(times) // 2] / 1000, tz=UTC)
        assert store.apply_retention(now=cut + timedelta(days=1), default_days=1) > 0
        assert store.vectors is not None
        store.vectors.save = lambda: None  # type: ignore[method-assign]
    finally:
        store.close()
    left = {t: embedded(work, t) for t in TYPES}
    assert set(rows["Face"]) - set(left["Face"])
    with closing(sqlite3.connect(work / "data" / "targets.db")) as db:
        left_ids = {str(t) for (t,) in db.execute("SELECT target_id FROM targets")}
    store = TargetStore(work / "data", sinks=())
    try:
        assert store.vectors is not None
        for t in TYPES:
            assert store.vectors.indexes[t].ids() == set(left[t]), t
            for seq in set(rows[t]) - set(left[t]):
                q = np.frombuffer(rows[t][seq], dtype="<f4")
                hits = store.search(target_type=t, query_embedding=q, page_size=100).hits
                assert {h.record.target_id for h in hits} <= left_ids  # a removed target is never returned
            for seq in left[t]:
                q = np.frombuffer(rows[t][seq], dtype="<f4")
                assert store.search(target_type=t, query_embedding=q, page_size=1).hits[0].similarity > 0.99  # type: ignore[operator]
    finally:
        store.close()

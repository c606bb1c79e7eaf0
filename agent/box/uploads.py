"""Pictures uploaded to PIC data sources (UploadFile, seed 002 9.2), kept durably and analysed in the background.

Decisions:

- **Durable first, analysed after (asynchronous).** :meth:`Uploads.add` writes the picture as
  ``<data_dir>/datasources/<DataSourceId>/<SourceId>.<ext>`` (a ``.tmp`` file, fsynced, renamed, the folder
  fsynced), then commits its row in ``<data_dir>/uploads.db`` (SQLite, ``synchronous=FULL``) as ``pending``;
  only then does UploadFile answer. A worker task takes pending rows in arrival order and has them analysed, so
  the call returns in the time of a write, whatever the detectors' backlog. An upload that is pending when the
  agent stops or is killed is analysed after the next start; one that was analysed but not yet marked so is
  analysed again and gives the same TargetIds (the store keeps the first). A crash between the file's rename and
  the row's commit leaves a picture without a row that nothing analyses: that call never got an answer.
- **Who analyses it**: the compute instances whose cameras (AddCameraForInstance ``CameraIds``) name the data
  source when the worker takes the upload, each with its algorithm; schedule windows do not apply (a picture is
  analysed once, when it arrives). With no such instance the upload is kept and marked ``unanalysed``; it is
  not analysed later when an instance is attached. A box running without detectors leaves uploads ``pending``
  until it runs with them.
- **Targets**: a still picture is not a video, so no tracker: every detection is a target of its own with
  DeviceId = the DataSourceId, CorpId = the data source's project, Timestamp = the upload's arrival, the
  picture as source image and the crop as target image, stored and announced like camera targets (store,
  outbox, target bus), so SearchTarget finds them.
- **States**: ``pending``, ``analysed`` (with the number of target records), ``unanalysed`` (no instance),
  ``failed`` (the file cannot be decoded or its targets could not be stored; the reason is kept and logged).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from agent.box.instances import InstanceRuntime
from agent.ops.files import fsync_path
from agent.ops.logs import kv
from agent.ops.metrics import Sample
from agent.ops.tasks import spawn
from pipelines.frames import Frame

log = logging.getLogger("vcs_edge.uploads")

DB_FILE = "uploads.db"
FOLDER = "datasources"
STATES = ("pending", "analysed", "unanalysed", "failed")

SCHEMA = """
CREATE TABLE IF NOT EXISTS uploads (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    source_id TEXT NOT NULL UNIQUE,
    data_source_id TEXT NOT NULL,
    corp_id TEXT NOT NULL,
    path TEXT NOT NULL,
    file_name TEXT NOT NULL,
    alias TEXT NOT NULL,
    md5 TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    state TEXT NOT NULL,
    targets INTEGER NOT NULL DEFAULT 0,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS uploads_by_state ON uploads (state, seq);
"""


class StillAnalyser(Protocol):
    """What the worker needs of the detectors (``agent.analytics.pipeline.Analytics``)."""

    async def analyse_still(
        self, frame: Frame, instances: Sequence[InstanceRuntime], source: str, corp_id: str = ""
    ) -> int: ...


@dataclass(frozen=True, slots=True)
class Upload:
    source_id: str
    data_source_id: str
    #: the data source's project: its targets' CorpId
    corp_id: str
    #: relative to the data dir: ``datasources/<DataSourceId>/<SourceId>.<ext>`` (UploadFile's OssPath)
    path: str
    file_name: str
    alias: str
    md5: str
    bytes: int
    received_at: datetime
    state: str = "pending"
    targets: int = 0
    detail: str = ""


class UploadTable:
    """``uploads.db``: one row per upload. Blocking; called from worker threads."""

    def __init__(self, data_dir: Path) -> None:
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(data_dir / DB_FILE, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def insert(self, up: Upload) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT INTO uploads (source_id, data_source_id, corp_id, path, file_name, alias, md5,"
                " bytes, received_ms, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending')",
                (
                    up.source_id,
                    up.data_source_id,
                    up.corp_id,
                    up.path,
                    up.file_name,
                    up.alias,
                    up.md5,
                    up.bytes,
                    round(up.received_at.timestamp() * 1000),
                ),
            )

    def pending(self, limit: int) -> list[Upload]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT source_id, data_source_id, corp_id, path, file_name, alias, md5, bytes, received_ms"
                " FROM uploads WHERE state = 'pending' ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
        return [
            Upload(
                source_id=r[0],
                data_source_id=r[1],
                corp_id=r[2],
                path=r[3],
                file_name=r[4],
                alias=r[5],
                md5=r[6],
                bytes=int(r[7]),
                received_at=datetime.fromtimestamp(int(r[8]) / 1000, tz=UTC),
            )
            for r in rows
        ]

    def finish(self, source_id: str, state: str, targets: int, detail: str) -> None:
        with self._lock:
            self._conn.execute(
                "UPDATE uploads SET state = ?, targets = ?, detail = ? WHERE source_id = ?",
                (state, targets, detail, source_id),
            )

    def get(self, source_id: str) -> tuple[str, int, str] | None:
        """(state, targets, detail) of one upload."""
        with self._lock:
            row = self._conn.execute(
                "SELECT state, targets, detail FROM uploads WHERE source_id = ?", (source_id,)
            ).fetchone()
        return None if row is None else (str(row[0]), int(row[1]), str(row[2]))

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._conn.execute("SELECT state, COUNT(*) FROM uploads GROUP BY state").fetchall()
        out = dict.fromkeys(STATES, 0)
        out.update({str(s): int(n) for s, n in rows})
        return out


class Uploads:
    """The box's uploaded pictures: :meth:`add` (UploadFile), the analysis worker, counters."""

    #: pending rows read per round
    BATCH = 16

    def __init__(
        self,
        data_dir: str | Path,
        instances_for: Callable[[str], list[InstanceRuntime]],
        analyser: StillAnalyser | None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.table = UploadTable(self.data_dir)
        self.instances_for = instances_for
        self.analyser = analyser
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._counts = self.table.counts()
        self.targets = 0

    # -- receiving ------------------------------------------------------------------------------------------

    async def add(self, upload: Upload, data: bytes) -> None:
        """Write the picture and its row (durably, off the loop), then wake the worker."""
        await asyncio.to_thread(self._write, upload, data)
        self._counts["pending"] += 1
        self._wake.set()

    def _write(self, upload: Upload, data: bytes) -> None:
        final = self.data_dir / upload.path
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(final.name + ".tmp")
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(final)
        fsync_path(final.parent)
        self.table.insert(upload)

    def state(self, source_id: str) -> tuple[str, int, str] | None:
        return self.table.get(source_id)

    # -- analysing ------------------------------------------------------------------------------------------

    def start(self) -> None:
        if self.analyser is None:
            if self._counts["pending"]:
                log.warning(
                    "uploads wait: no detector runs on this box",
                    extra=kv(pending=self._counts["pending"]),
                )
            return
        self._task = spawn(self._run(), name="uploads")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def close(self) -> None:
        self.table.close()

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            batch = await asyncio.to_thread(self.table.pending, self.BATCH)
            if not batch:
                await self._wake.wait()
                continue
            for up in batch:
                try:
                    await self._analyse(up)
                except Exception:
                    log.exception("analysing upload %s failed", up.source_id)
                    # marked failed so the queue goes on; if even that fails the task ends (and is logged)
                    await self._finish(up, "failed", 0, "the analysis failed; see the agent's log")

    async def _analyse(self, up: Upload) -> None:
        assert self.analyser is not None
        instances = self.instances_for(up.data_source_id)
        if not instances:
            await self._finish(
                up, "unanalysed", 0, f"no compute instance analyses data source {up.data_source_id}"
            )
            return
        image = await asyncio.to_thread(_decode, self.data_dir / up.path)
        if image is None:
            await self._finish(up, "failed", 0, "the picture cannot be decoded")
            return
        frame = Frame(
            device_id=up.data_source_id,
            image=image,
            pts=0.0,
            captured_at=up.received_at,
            keyframe=True,
            instance_ids=tuple(i.instance_id for i in instances),
        )
        try:
            made = await self.analyser.analyse_still(frame, instances, up.source_id, up.corp_id)
        except RuntimeError as exc:  # its targets could not be stored
            await self._finish(up, "failed", 0, str(exc))
            return
        for inst in instances:
            inst.frames += 1
        self.targets += made
        await self._finish(up, "analysed", made, "")

    async def _finish(self, up: Upload, state: str, targets: int, detail: str) -> None:
        await asyncio.to_thread(self.table.finish, up.source_id, state, targets, detail)
        self._counts["pending"] = max(0, self._counts["pending"] - 1)
        self._counts[state] += 1
        level = logging.WARNING if state == "failed" else logging.INFO
        log.log(
            level,
            "upload %s",
            state,
            extra=kv(source=up.source_id, data_source=up.data_source_id, targets=targets, detail=detail),
        )

    # -- figures --------------------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return {**self._counts, "targets": self.targets, "analysing": self.analyser is not None}

    def samples(self) -> Iterable[Sample]:
        yield Sample(
            "vcs_edge_uploads_pending",
            "gauge",
            "Uploaded pictures waiting for analysis",
            {},
            float(self._counts["pending"]),
        )
        for state in STATES[1:]:
            yield Sample(
                "vcs_edge_uploads_total",
                "counter",
                "Uploaded pictures by outcome (since the data dir was made)",
                {"state": state},
                float(self._counts[state]),
            )


def _decode(path: Path) -> np.ndarray[Any, np.dtype[np.uint8]] | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        return None
    return np.ascontiguousarray(image, dtype=np.uint8)

"""From sampled frames to stored target records: the frame sink that the instances feed.

Frames of every camera meet in one micro-batcher per algorithm (``face``, ``body``, ``face_body``); its worker
thread runs the detectors on the batch, tracks per camera, embeds the faces being reported, and turns every
report into a :class:`~agent.targets.TargetRecord` with its best shot. A frame that several instances of the same
algorithm sampled is detected once. Records, their JPEGs and the outbox rows are written in one store
transaction on a writer thread of their own (the detectors never wait for JPEG encoding, SQLite or fsync),
then announced on the event loop (GB28181 alarms, counters). ONNX Runtime and PyAV release the GIL,
so the batcher and the decode threads share the cores while the loop stays responsive.

Decisions: tracks belong to a camera and an algorithm; each report becomes one record per instance (of that
algorithm) that sampled its best frame, and the TargetId is a function of camera, type, instance, track start and
track number, so a re-sent record keeps its id. With ``report_first_sighting`` the first sighting is stored at
once; the later best shot of the same track keeps that TargetId, and the store keeps the first one (a duplicate
id is never stored twice).

Still pictures (uploads to a PIC data source, :mod:`agent.box.uploads`) go through :meth:`Analytics.analyse_still`:
the same models, attributes and embeddings, no tracker (each detection is its own record), the TargetId made from
the data source, the upload's SourceId, its arrival time and the detection's place, so analysing the same upload
again (after a restart) gives the same ids and the store keeps the first.

Long because: the models, the per-algorithm batchers and the record writer share one life cycle and one set of counters; the detection stages themselves live in pipelines/.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from agent.analytics.targets import TargetAttribute, TargetRecord, make_target_id
from agent.box.instances import InstanceRuntime
from agent.config import Algorithm, CustomModelConfig, DetectionConfig
from agent.ops.metrics import Sample
from agent.search.query import QueryVector
from agent.storage.store import StoreUnavailable, TargetStore
from pipelines.crops import encode_jpeg
from pipelines.detect import (
    BodyDetector,
    CustomDetector,
    FaceDetector,
    FaceEmbedder,
    RuntimeOptions,
    default_batch,
)
from pipelines.detect import CustomModelConfig as CustomSpec
from pipelines.detect.attributes import AgeGenderNet, AttributeClassifier
from pipelines.detect.batch import BatcherClosed, FrameDropped, MicroBatcher
from pipelines.detect.detection import Detection, Detector, Image
from pipelines.detect.face import HeadRegionFaces
from pipelines.detect.nanodet import NanoDetDetector
from pipelines.detect.pipeline import DetectionPipeline
from pipelines.frames import Frame
from pipelines.track import CameraTracks, TrackerConfig, TrackUpdate, body_vector

log = logging.getLogger("vcs_edge.analytics")

#: the grey border a query picture gets when no body is found in it as it is (share of its width, height)
QUERY_BORDER = (0.5, 1 / 6)

#: TargetIds remembered as stored (a track's later reports reuse its id)
STORED_IDS_KEPT = 65536

ALGORITHM_NAMES = {
    Algorithm.FACE: "人脸检测",
    Algorithm.BODY: "人体检测",
    Algorithm.FACE_BODY: "人脸人体检测",
}


def custom_spec(m: CustomModelConfig, max_batch: int = 8) -> CustomSpec:
    """A site file's custom model in the terms of :mod:`pipelines.detect`."""
    return CustomSpec(
        path=Path(m.path),
        layout=m.layout,
        classes=dict(m.classes),
        model_id=m.id,
        input_size=(m.input_width, m.input_height),
        score_threshold=m.score_threshold,
        nms_threshold=m.nms_threshold,
        max_batch=max_batch,
    )


class Models:
    """The loaded models of a site, shared by every algorithm's pipeline (one session per model)."""

    def __init__(self, cfg: DetectionConfig) -> None:
        self.cfg = cfg
        # ONNX Runtime's default (every core) fights the decode threads on a small box: measured on 2 cores,
        # one thread per call did the same work at half the CPU (bench.capacity)
        threads = cfg.intra_op_threads or max(1, (os.cpu_count() or 2) // 2)
        # and as many batches at once as the cores hold calls: on 2 cores two single-threaded calls
        self.workers = cfg.workers or min(4, max(1, (os.cpu_count() or 2) // threads))
        self.runtime = RuntimeOptions(
            provider=cfg.provider,
            intra_op_threads=threads,
            inter_op_threads=cfg.inter_op_threads,
        )
        #: frames per model call (``batch_max``, 0 = by provider: :func:`default_batch`)
        self.batch_max = cfg.batch_max or default_batch(cfg.provider)
        self._custom = {m.id: m for m in cfg.custom_models}
        self.face: Detector | None = None
        self.body: Detector | None = None
        self.embedder: FaceEmbedder | None = None
        self.head_faces: HeadRegionFaces | None = None
        #: face_body's whole-frame face pass (``face`` on a smaller canvas when the head regions are searched)
        self.face_with_bodies: Detector | None = None
        self.attributes: AttributeClassifier | None = None
        if cfg.face.enabled:
            self.face = self._custom_detector(cfg.face.model) or FaceDetector(
                input_size=(cfg.face.input_width, cfg.face.input_height),
                score_threshold=cfg.face.score_threshold,
                min_size=cfg.face.min_size_px,
                max_batch=self.batch_max,
                runtime=self.runtime,
            )
            if cfg.face.embed:
                self.embedder = FaceEmbedder(max_batch=16, runtime=self.runtime)
            if cfg.face.head_region and cfg.body.enabled and isinstance(self.face, FaceDetector):
                self.head_faces = HeadRegionFaces(
                    self.face,
                    score_threshold=max(0.7, cfg.face.score_threshold),
                    min_face_px=cfg.face.head_region_min_px,
                )
                # with the head regions for far faces, face_body's whole-frame pass only needs close-up ones
                self.face_with_bodies = self.face.with_input(
                    (cfg.face.face_body_input_width, cfg.face.face_body_input_height)
                )
        if cfg.attributes:
            age_gender = AgeGenderNet(runtime=self.runtime) if cfg.face.enabled else None
            self.attributes = AttributeClassifier(age_gender)
        if cfg.body.enabled:
            self.body = self._custom_detector(cfg.body.model) or self._body_detector()

    def _body_detector(self) -> Detector:
        """The bundled body/vehicle model the site chose (NanoDet also finds Motor and NonMotor)."""
        body = self.cfg.body
        if body.model == "ssdlite-person":
            return BodyDetector(
                input_size=body.input_size(),
                score_threshold=body.threshold(),
                min_height=body.min_height_px,
                runtime=self.runtime,
            )
        model_id = body.bundled_id()
        return NanoDetDetector(
            model_id=model_id,
            input_size=body.input_size(),
            score_threshold=body.threshold(),
            min_height=body.min_height_px,
            max_batch=self.batch_max,
            runtime=self.runtime,
        )

    def _custom_detector(self, model_id: str) -> Detector | None:
        m = self._custom.get(model_id)
        if m is None:
            return None
        return CustomDetector(custom_spec(m, self.batch_max), self.runtime)

    def embed_picture(self, image_bytes: bytes, target_type: str) -> QueryVector | None:
        """Search by picture: the vector of the largest face or body in a picture, made as stored targets get
        theirs, with the number found; None when there is none, or no model for ``target_type`` on this box.

        Faces: RetinaFace, 5-point alignment, SFace. Bodies: the site's body detector (its Body boxes only), then
        the appearance vector of :func:`pipelines.track.body_vector`, as every stored Body target has.
        """
        if target_type == "Face":
            if self.embedder is None or not isinstance(self.face, FaceDetector):
                return None
        elif target_type != "Body" or self.body is None:
            return None
        decoded = cv2.imdecode(np.frombuffer(image_bytes, np.uint8), cv2.IMREAD_COLOR)
        if decoded is None:
            return None
        image = np.ascontiguousarray(decoded, dtype=np.uint8)
        if target_type == "Body":
            return self._embed_body(image)
        assert self.embedder is not None and isinstance(self.face, FaceDetector)
        faces = [f for f in self.face.detect(image) if f.landmarks is not None]
        if not faces:
            return None
        best = max(faces, key=lambda f: f.area)
        assert best.landmarks is not None
        return QueryVector(self.embedder.embed(image, best.landmarks), len(faces), _int_box(best))

    def _embed_body(self, image: Image) -> QueryVector | None:
        """The largest body of a query picture and its appearance vector.

        A picture found empty is looked at once more on a grey border (half its width left and right, a sixth
        of its height above and below): a crop cut close around a person, as target crops are, is where the
        detector misses most (on the labelled clip of bench/body_search.py it found a body in 57 of 168 such
        crops as they are, in 159 with the border)."""
        assert self.body is not None
        bodies = [b for b in self.body.detect_batch([image])[0] if b.kind == "Body"]
        if not bodies:
            h, w = image.shape[:2]
            bx, by = round(w * QUERY_BORDER[0]), round(h * QUERY_BORDER[1])
            framed = np.ascontiguousarray(
                cv2.copyMakeBorder(image, by, by, bx, bx, cv2.BORDER_CONSTANT, value=(114, 114, 114)),
                dtype=np.uint8,
            )
            bodies = [
                Detection(
                    max(0.0, b.x1 - bx),
                    max(0.0, b.y1 - by),
                    min(float(w), b.x2 - bx),
                    min(float(h), b.y2 - by),
                    b.score,
                    b.kind,
                )
                for b in self.body.detect_batch([framed])[0]
                if b.kind == "Body"
            ]
        found = [(b, v) for b in bodies if (v := body_vector(image, b)) is not None]
        if not found:
            return None
        body, vector = max(found, key=lambda bv: bv[0].area)
        return QueryVector(vector, len(found), _int_box(body))

    def detectors_for(self, algorithm: Algorithm) -> list[Detector]:
        # face_body without the whole-frame pass: faces come from the head regions of the bodies only
        whole_face = (
            (self.face_with_bodies or self.face)
            if self.cfg.face.whole_frame or self.head_faces is None
            else None
        )
        want = {
            Algorithm.FACE: [self.face],
            Algorithm.BODY: [self.body],
            Algorithm.FACE_BODY: [whole_face, self.body],
        }[algorithm]
        return [d for d in want if d is not None]


def _int_box(d: Detection) -> tuple[int, int, int, int]:
    return int(d.x1), int(d.y1), int(d.x2), int(d.y2)


class Analytics:
    """The FrameSink of the instances. ``on_records`` is called on the loop with each batch of new records."""

    def __init__(
        self,
        models: Models,
        store: TargetStore,
        *,
        corp_id: str,
        jpeg_quality: int = 90,
        on_records: Callable[[list[TargetRecord]], None] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.models = models
        self.cfg = models.cfg
        self.store = store
        self.corp_id = corp_id
        self.jpeg_quality = jpeg_quality
        self.on_records = on_records
        self.loop = loop or asyncio.get_running_loop()
        self.tracker_config = TrackerConfig(
            max_missed_s=self.cfg.track_max_missed_s,
            max_age_s=self.cfg.track_max_age_s,
            report_first=self.cfg.report_first_sighting,
        )
        self._ids = itertools.count(1)
        self._pipelines: dict[Algorithm, DetectionPipeline] = {}
        self._batchers: dict[Algorithm, MicroBatcher[list[TrackUpdate]]] = {}
        self._inflight: dict[tuple[int, Algorithm], Frame] = {}
        self._pipeline_locks: dict[Algorithm, threading.Lock] = {}
        self._last_frame: dict[tuple[Algorithm, str], float] = {}
        self._instances: dict[str, InstanceRuntime] = {}
        self._lock = threading.Lock()
        self._sweeper: asyncio.Task[None] | None = None
        # Records are built, encoded and stored on their own thread, in order, so the detectors never wait
        # for JPEG encoding, SQLite commits or fsync (a slow disk would otherwise stall every camera).
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="analytics-store")
        # TargetIds stored lately: with report_first_sighting the track's later best shot has the same id and
        # the store would refuse it; knowing that here saves its crop and frame JPEG encoding.
        self._stored_ids: OrderedDict[str, None] = OrderedDict()
        # counters (read by /metrics)
        self.frames_in = 0
        self.frames_dropped = 0
        self.records = 0
        self.store_errors = 0
        self.errors = 0
        #: frames the detectors finished, and their capture-to-detection-done lag (sum and last, seconds):
        #: the mean lag over a window is the difference of the sums over that of the counts
        self.frames_detected = 0
        self.detect_lag_s_sum = 0.0
        self.detect_lag_s_last = 0.0
        #: capture-to-stored latency of records, for the capacity benchmark
        self.latencies_ms: deque[float] = deque(maxlen=4096)

    # -- FrameSink ------------------------------------------------------------------------------------------

    def submit(self, frame: Frame, instance: InstanceRuntime) -> None:
        algorithm = instance.algorithm
        self._instances[instance.instance_id] = instance
        self.frames_in += 1
        key = (id(frame), algorithm)
        with self._lock:
            if self._inflight.get(key) is frame:
                return  # another instance of this algorithm sampled the same frame
            self._inflight[key] = frame
        batcher = self._batcher(algorithm)
        try:
            fut = batcher.submit(frame)
        except BatcherClosed:
            return
        fut.add_done_callback(functools.partial(self._done_callback, algorithm=algorithm, frame=frame))

    def _done_callback(self, fut: Future[list[TrackUpdate]], *, algorithm: Algorithm, frame: Frame) -> None:
        self._done(fut, algorithm, frame)

    def _batcher(self, algorithm: Algorithm) -> MicroBatcher[list[TrackUpdate]]:
        b = self._batchers.get(algorithm)
        if b is None:
            pipeline = DetectionPipeline(
                self.models.detectors_for(algorithm),
                embedder=self.models.embedder if algorithm is not Algorithm.BODY else None,
                tracks=CameraTracks(self.tracker_config, id_factory=lambda: str(next(self._ids))),
                head_faces=self.models.head_faces if algorithm is Algorithm.FACE_BODY else None,
                attributes=self.models.attributes,
            )
            self._pipelines[algorithm] = pipeline
            lock = self._pipeline_locks[algorithm] = threading.Lock()

            def then(
                frames: list[Frame],
                detections: list[list[Detection]],
                p: DetectionPipeline = pipeline,
                lk: threading.Lock = lock,
            ) -> list[list[TrackUpdate]]:
                with lk:  # the trackers are also ended by the sweeper and flushed at stop
                    return p.track_frames(frames, detections)

            b = MicroBatcher(
                pipeline.detect_frames,
                max_batch=self.models.batch_max,
                max_wait_ms=self.cfg.batch_wait_ms,
                max_pending=self.cfg.queue_max,
                name=f"detect-{algorithm.value}",
                workers=self.models.workers,
                then=then,
            ).start()
            self._batchers[algorithm] = b
        return b

    def _done(self, fut: Future[list[TrackUpdate]], algorithm: Algorithm, frame: Frame) -> None:
        """Runs on the batcher thread: store the reports due after this frame."""
        with self._lock:
            self._inflight.pop((id(frame), algorithm), None)
            self._last_frame[(algorithm, frame.device_id)] = time.monotonic()
        try:
            updates = fut.result()
        except FrameDropped:
            with self._lock:
                self.frames_dropped += 1
            return
        except BatcherClosed:
            log.debug("frame of %s not detected: the agent is stopping", frame.device_id)
            return
        except Exception:
            self.errors += 1
            log.exception("detection failed on a frame of %s", frame.device_id)
            return
        lag = max(0.0, time.time() - frame.captured_at.timestamp())
        with self._lock:  # futures resolve on every detection worker's thread
            self.frames_detected += 1
            self.detect_lag_s_sum += lag
            self.detect_lag_s_last = lag
        if updates:
            self._writer.submit(self._emit_logged, updates, algorithm)

    # -- lifecycle ------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._sweeper = self.loop.create_task(self._sweep_loop(), name="analytics-sweep")

    async def _sweep_loop(self) -> None:
        """End the tracks of cameras that stopped delivering frames (window closed, stream down)."""
        while True:
            await asyncio.sleep(max(1.0, self.cfg.track_max_missed_s / 2))
            limit = time.monotonic() - (self.cfg.track_max_missed_s + 1.0)
            with self._lock:
                idle = [key for key, last in self._last_frame.items() if last < limit]
                for key in idle:
                    del self._last_frame[key]
            for algorithm, device_id in idle:
                await asyncio.to_thread(self._end_camera, algorithm, device_id)

    def _end_camera(self, algorithm: Algorithm, device_id: str) -> None:
        with self._pipeline_locks[algorithm]:
            updates = self._pipelines[algorithm].end_camera(device_id)
        self._writer.submit(self._emit_logged, updates, algorithm).result()

    async def stop(self) -> None:
        if self._sweeper:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for algorithm, batcher in self._batchers.items():
            await asyncio.to_thread(batcher.close, 5.0)
            await asyncio.to_thread(self._flush, algorithm)
        await asyncio.to_thread(self._writer.shutdown, True)

    def _flush(self, algorithm: Algorithm) -> None:
        with self._pipeline_locks[algorithm]:
            updates = self._pipelines[algorithm].flush()
        self._writer.submit(self._emit_logged, updates, algorithm).result()

    # -- records ----------------------------------------------------------------------------------------------

    def records_for(
        self, u: TrackUpdate, algorithm: Algorithm, source: str = "", corp_id: str = ""
    ) -> list[TargetRecord]:
        """One record per instance of ``algorithm`` that sampled the report's best frame; ``source`` goes into
        the TargetIds (an upload's SourceId, see :func:`make_target_id`), ``corp_id`` (default: the site's
        project) is the records' CorpId."""
        shot = u.best
        frame = shot.frame
        det = shot.detection
        x1, y1, x2, y2 = det.box()
        out = []
        for iid in frame.instance_ids:
            inst = self._instances.get(iid)
            if inst is None or inst.algorithm is not algorithm:
                continue
            if inst.target_types is not None and u.kind not in inst.target_types:
                continue  # e.g. the vehicle algorithm: the model's Body detections are not its targets
            out.append(
                TargetRecord(
                    target_id=make_target_id(
                        frame.device_id, u.kind, u.first_seen, int(u.track_id), iid, source
                    ),
                    target_type=u.kind,
                    timestamp=frame.captured_at,
                    device_id=frame.device_id,
                    left_top_x=x1,
                    left_top_y=y1,
                    right_bottom_x=x2,
                    right_bottom_y=y2,
                    score=float(det.score),
                    quality=round(float(shot.quality), 4),
                    landmarks=tuple((float(x), float(y)) for x, y in det.landmarks)
                    if det.landmarks is not None
                    else None,
                    corp_id=corp_id or self.corp_id,
                    instance_id=iid,
                    algorithm_id=inst.config.algorithm_id,
                    algorithm_name=inst.config.algorithm_name or ALGORITHM_NAMES[algorithm],
                    track_id=int(u.track_id),
                    embedding=u.embedding,
                    attributes=tuple(TargetAttribute(k, v) for k, v in det.attributes)
                    + self._attributes(u, iid, source),
                )
            )
        return out

    @staticmethod
    def _attributes(u: TrackUpdate, instance_id: str, source: str = "") -> tuple[TargetAttribute, ...]:
        """The classifier attributes of a report, plus the TargetId of the body a face was found on."""
        attrs = [TargetAttribute(a.key, a.value, a.score) for a in u.attributes]
        link = u.linked
        if link is not None:
            body_id = make_target_id(
                u.device_id, link.kind, link.first_seen, int(link.track_id), instance_id, source
            )
            attrs.append(TargetAttribute(f"{link.kind}TargetId", body_id))
        return tuple(attrs)

    def _emit_logged(self, updates: Iterable[TrackUpdate], algorithm: Algorithm) -> None:
        try:
            self._emit(updates, algorithm)
        except Exception:
            self.store_errors += 1
            log.exception("turning track reports into records failed")

    def _emit(
        self, updates: Iterable[TrackUpdate], algorithm: Algorithm, source: str = "", corp_id: str = ""
    ) -> int:
        """Store the records of ``updates`` and announce the new ones; returns how many could not be stored."""
        failed = 0
        by_frame: dict[int, tuple[Frame, list[tuple[TargetRecord, bytes]]]] = {}
        for u in updates:
            records = [
                r
                for r in self.records_for(u, algorithm, source, corp_id)
                if r.target_id not in self._stored_ids
            ]
            if not records:
                continue
            crop = u.best.crop_jpeg(quality=self.jpeg_quality)
            entry = by_frame.setdefault(id(u.best.frame), (u.best.frame, []))
            entry[1].extend((r, crop) for r in records)
        made: list[TargetRecord] = []
        for frame, items in by_frame.values():
            try:
                fresh = self.store.add_many(encode_jpeg(frame.image, self.jpeg_quality), items)
            except StoreUnavailable:
                self.store_errors += len(items)  # the store counted and logged the condition once
                failed += len(items)
                continue
            except Exception:
                self.store_errors += len(items)
                failed += len(items)
                log.exception("storing %d targets of %s failed", len(items), frame.device_id)
                continue
            now = time.time()
            for (record, _), ok in zip(items, fresh, strict=True):
                self._stored_ids[record.target_id] = None
                if len(self._stored_ids) > STORED_IDS_KEPT:
                    self._stored_ids.popitem(last=False)
                if ok:
                    made.append(record)
                    self.latencies_ms.append((now - record.timestamp.timestamp()) * 1000.0)
        if made:
            self.records += len(made)
            if self.on_records is not None:
                with contextlib.suppress(RuntimeError):
                    self.loop.call_soon_threadsafe(self.on_records, made)
        return failed

    # -- still pictures -------------------------------------------------------------------------------------

    async def analyse_still(
        self, frame: Frame, instances: Sequence[InstanceRuntime], source: str, corp_id: str = ""
    ) -> int:
        """Detect, describe, embed and store one still picture for ``instances`` (each of its algorithm), as
        targets of project ``corp_id`` (default: the site's). Returns the number of records it makes, those an
        earlier analysis of the same ``source`` stored already included; raises ``RuntimeError`` when some could
        not be stored (the store counted and logged why)."""
        by_algorithm: dict[Algorithm, list[str]] = {}
        for inst in instances:
            self._instances[inst.instance_id] = inst
            by_algorithm.setdefault(inst.algorithm, []).append(inst.instance_id)
        made = 0
        for algorithm, ids in by_algorithm.items():
            self._batcher(algorithm)  # makes the algorithm's pipeline (on the loop, as submit does)
            still = replace(frame, instance_ids=tuple(ids))
            updates = await asyncio.to_thread(self._still_updates, algorithm, still)
            made += sum(len(self.records_for(u, algorithm, source, corp_id)) for u in updates)
            failed = await asyncio.wrap_future(
                self._writer.submit(self._emit, updates, algorithm, source, corp_id)
            )
            if failed:
                raise RuntimeError(f"{failed} targets of the picture could not be stored")
        self.frames_in += 1
        return made

    def _still_updates(self, algorithm: Algorithm, frame: Frame) -> list[TrackUpdate]:
        # no pipeline lock: a still meets no tracker (the lock's charge), so cameras keep being tracked meanwhile
        return self._pipelines[algorithm].process_still(frame)

    # -- figures ----------------------------------------------------------------------------------------------

    def samples(self) -> Iterable[Sample]:
        for key, help_ in (
            ("frames_in", "Sampled frames given to the detectors"),
            ("frames_dropped", "Frames dropped because the detectors were behind"),
            ("records", "Target records stored"),
            ("store_errors", "Targets the store could not take (counted per target)"),
            ("errors", "Frames the detectors failed on"),
            ("frames_detected", "Frames the detectors finished"),
        ):
            yield Sample(f"vcs_edge_analytics_{key}_total", "counter", help_, {}, float(getattr(self, key)))
        yield Sample(
            "vcs_edge_analytics_detect_lag_seconds_total",
            "counter",
            "Sum over finished frames of the time from capture to detection done (divide by frames_detected)",
            {},
            self.detect_lag_s_sum,
        )
        yield Sample(
            "vcs_edge_analytics_detect_lag_seconds",
            "gauge",
            "Capture to detection done of the last finished frame (grows when the detectors fall behind)",
            {},
            self.detect_lag_s_last,
        )
        for algorithm, b in self._batchers.items():
            labels = {"algorithm": algorithm.value}
            yield Sample(
                "vcs_edge_detect_batches_total", "counter", "Detector batches", labels, float(b.stats.batches)
            )
            yield Sample(
                "vcs_edge_detect_frames_total", "counter", "Frames detected", labels, float(b.stats.frames)
            )
            yield Sample(
                "vcs_edge_detect_busy_seconds_total",
                "counter",
                "Time the detectors were busy",
                labels,
                float(b.stats.busy_s),
            )
            yield Sample(
                "vcs_edge_detect_pending",
                "gauge",
                "Frames waiting for the detectors",
                labels,
                float(b.pending),
            )

    def health(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "dropped": self.frames_dropped,
            "pending": sum(b.pending for b in self._batchers.values()),
        }

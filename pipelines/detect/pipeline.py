"""Detection and tracking for frames of many cameras, in one call per batch.

``DetectionPipeline.process`` is what the micro-batcher calls: every detector sees the whole batch (batched where
the model allows); with ``head_faces`` the head region of every body is searched for faces too (merged with the
whole-frame faces, each linked to its body); each camera's tracker takes its frames in order; and the targets being
reported get their attributes (colours, gender and age) and faces their embedding, all of a batch in one session
call per model; bodies get their appearance vector (the mean colour histogram of their sightings, made by the
tracker), so Body targets are stored with a vector and found by picture.

``process_still`` is the same detection, attributes and embeddings for one still picture (an upload to a PIC data
source): a picture is not a video, so no tracker sees it and every detection is reported on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from pipelines.frames import Frame
from pipelines.track import CameraTracks, TrackerConfig, TrackRef, TrackUpdate, body_vector, shot_quality

from .attributes import AttributeClassifier
from .detection import Detection, Detector, Image
from .embed import FaceEmbedder, align_face
from .face import HeadRegionFaces, merge_faces


class DetectionPipeline:
    """Detectors + optional head-region faces, attributes and face embedder + per-camera trackers.

    Called from one thread at a time. ``detectors`` may leave out the whole-frame face detector when
    ``head_faces`` is given (street cameras: faces only where bodies are).
    """

    def __init__(
        self,
        detectors: Sequence[Detector],
        *,
        embedder: FaceEmbedder | None = None,
        tracker: TrackerConfig | None = None,
        tracks: CameraTracks | None = None,
        head_faces: HeadRegionFaces | None = None,
        attributes: AttributeClassifier | None = None,
        min_embed_px: float = 16.0,
    ) -> None:
        if not detectors:
            raise ValueError("a detection pipeline needs at least one detector")
        self.detectors = list(detectors)
        self.embedder = embedder
        self.head_faces = head_faces
        self.attributes = attributes
        #: faces narrower than this get no embedding (a far face from a head region: a few pixels say nothing)
        self.min_embed_px = min_embed_px
        self.tracks = tracks or CameraTracks(tracker)

    def detect(self, images: Sequence[Image]) -> list[list[Detection]]:
        """All detectors on all images; per image, the detections of every model together."""
        merged: list[list[Detection]] = [[] for _ in images]
        for detector in self.detectors:
            for i, found in enumerate(detector.detect_batch(list(images))):
                merged[i].extend(found)
        if self.head_faces is not None:
            heads = self.head_faces.find_batch(list(images), merged)
            merged = [
                merge_faces(found, faces, (image.shape[1], image.shape[0]))
                for image, found, faces in zip(images, merged, heads, strict=True)
            ]
        return merged

    def process(self, frames: Sequence[Frame]) -> list[list[TrackUpdate]]:
        """Detect, track and embed; returns the reports due after each frame (same order as ``frames``)."""
        return self.track_frames(frames, self.detect_frames(frames))

    def detect_frames(self, frames: Sequence[Frame]) -> list[list[Detection]]:
        """The stateless half of :meth:`process` (the models): may run for several batches at once."""
        return self.detect([f.image for f in frames])

    def track_frames(
        self, frames: Sequence[Frame], detections: Sequence[list[Detection]]
    ) -> list[list[TrackUpdate]]:
        """The stateful half of :meth:`process` (trackers, then attributes and embeddings of the reports): one
        batch at a time, in capture order per camera."""
        per_frame = [
            self.tracks.update(frame, found) for frame, found in zip(frames, detections, strict=True)
        ]
        return self._embed(self._describe(per_frame))

    def process_still(self, frame: Frame) -> list[TrackUpdate]:
        """Detect, describe and embed one still picture; one report (event ``still``) per detection, in the
        detectors' order, ``track_id`` its 1-based place in that order (the same picture gives the same list).
        A face found in a body's head region is linked to that body's report."""
        found = self.detect([frame.image])[0]
        at = frame.captured_at
        updates = []
        for i, det in enumerate(found):
            parent = det.parent
            linked = (
                TrackRef(str(parent + 1), found[parent].kind, at)
                if 0 <= parent < len(found) and parent != i
                else None
            )
            updates.append(
                TrackUpdate(
                    event="still",
                    track_id=str(i + 1),
                    device_id=frame.device_id,
                    kind=det.kind,
                    best=shot_quality(frame, det, self.tracks.config),
                    first_seen=at,
                    last_seen=at,
                    hits=1,
                    linked=linked,
                    # a still's body is searched by its one box, as a query picture's is
                    appearance=body_vector(frame.image, det) if det.kind == "Body" else None,
                )
            )
        return self._embed(self._describe([updates]))[0]

    def end_camera(self, device_id: str) -> list[TrackUpdate]:
        return self._embed(self._describe([self.tracks.end_camera(device_id)]))[0]

    def flush(self) -> list[TrackUpdate]:
        return self._embed(self._describe([self.tracks.flush()]))[0]

    @staticmethod
    def _body_vectors(groups: list[list[TrackUpdate]]) -> list[list[TrackUpdate]]:
        """Body reports carry their appearance vector (:class:`pipelines.track.AppearanceMean`) as embedding:
        the vector Body targets are stored and searched with."""
        return [
            [
                replace(u, embedding=u.appearance)
                if u.kind == "Body" and u.embedding is None and u.appearance is not None
                else u
                for u in updates
            ]
            for updates in groups
        ]

    def _describe(self, groups: list[list[TrackUpdate]]) -> list[list[TrackUpdate]]:
        """Attributes of every report's best shot (a report without attributes only: ``first`` has them already)."""
        if self.attributes is None:
            return groups
        wanted = [
            (g, k) for g, updates in enumerate(groups) for k, u in enumerate(updates) if not u.attributes
        ]
        if not wanted:
            return groups
        shots = [(groups[g][k].best.frame.image, groups[g][k].best.detection) for g, k in wanted]
        found = self.attributes.describe(shots)
        out = [list(updates) for updates in groups]
        for (g, k), attrs in zip(wanted, found, strict=True):
            if attrs:
                out[g][k] = replace(out[g][k], attributes=attrs)
        return out

    def _embed(self, groups: list[list[TrackUpdate]]) -> list[list[TrackUpdate]]:
        groups = self._body_vectors(groups)
        if self.embedder is None:
            return groups
        wanted = [
            (g, k)
            for g, updates in enumerate(groups)
            for k, u in enumerate(updates)
            if u.kind == "Face"
            and u.best.detection.landmarks is not None
            and u.embedding is None
            and u.best.detection.width >= self.min_embed_px
        ]
        if not wanted:
            return groups
        crops = []
        for g, k in wanted:
            best = groups[g][k].best
            assert best.detection.landmarks is not None
            crops.append(align_face(best.frame.image, best.detection.landmarks))
        vectors = self.embedder.embed_aligned(crops)
        out = [list(updates) for updates in groups]
        for row, (g, k) in enumerate(wanted):
            out[g][k] = replace(out[g][k], embedding=vectors[row])
        return out

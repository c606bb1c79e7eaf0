"""What footage goes, and in which order: age, the per-camera quota, then the disk's high watermark.

1. Age: continuous footage older than the camera's VIDEO days (UpdateDevicesStorage, else
   ``recording.retention_days``); event footage older than ``event_retention_days`` (or the camera's VIDEO days
   when those are longer). 0 days means no age limit.
2. Quota: while a camera's footage exceeds its ``quota_mb``, its oldest continuous segment goes, and its event
   segments only when no continuous one is left (event footage is kept longer).
3. Watermark: while the recording disk is fuller than ``max_disk_percent``, the oldest continuous segment of all
   cameras goes, then the oldest event segment. Step 2 ran first, so cameras over their quota lost theirs first.

Each removal drops the index row first (one transaction), then the file: a crash between the two leaves a
file without a row, which the next start's reconcile indexes again or removes; never a row without a file.
"""

from __future__ import annotations

import logging
import shutil
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from .index import Library, Segment, SegmentIndex

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
#: once over the watermark, footage goes until the disk is this share of the mark
LOW_RATIO = 0.98


@dataclass
class Policy:
    """Retention settings, resolved per camera by the caller."""

    default_days: int = 7
    event_days: int = 30
    video_days: Mapping[str, int] = field(default_factory=dict)  # device id -> UpdateDevicesStorage VIDEO
    quota_bytes: Mapping[str, int | None] = field(default_factory=dict)
    default_quota_bytes: int | None = None
    max_disk_percent: float = 90.0


def _delete(idx: SegmentIndex, segs: list[Segment]) -> None:
    if not segs:
        return
    idx.remove(segs)
    for s in segs:
        (idx.root / s.path).unlink(missing_ok=True)


def prune(
    library: Library,
    policy: Policy,
    now_ms: int,
    disk_usage: Callable[[], tuple[int, int]] | None = None,
) -> Counter[str]:
    """Apply the policy once; returns removed segments by reason (``age``, ``quota``, ``watermark``).

    ``disk_usage`` gives (used, total) bytes of the recording disk (default: ``shutil.disk_usage``).
    """
    removed: Counter[str] = Counter()
    freed: Counter[str] = Counter()
    cams = library.cameras()
    for cam in cams:
        idx = library.index(cam)
        days = policy.video_days.get(cam, policy.default_days)
        cont_days = days
        event_days = max(policy.event_days, days) if policy.event_days > 0 and days > 0 else 0
        old: list[Segment] = []
        if cont_days > 0:
            old += idx.segments(end_ms=now_ms - cont_days * DAY_MS, kind="continuous")
        if event_days > 0:
            old += idx.segments(end_ms=now_ms - event_days * DAY_MS, kind="event")
        old = [
            s
            for s in old
            if s.end_ms <= now_ms - (cont_days if s.kind == "continuous" else event_days) * DAY_MS
        ]
        _delete(idx, old)
        if cont_days > 0 and event_days > 0:  # a gap goes with the oldest footage around it
            idx.remove_gaps_before(now_ms - max(cont_days, event_days) * DAY_MS)
        removed["age"] += len(old)
        freed["age"] += sum(s.bytes for s in old)
    for cam in cams:
        quota = policy.quota_bytes.get(cam, policy.default_quota_bytes)
        if quota is None:
            continue
        idx = library.index(cam)
        total = idx.total_bytes()
        if total <= quota:
            continue
        victims: list[Segment] = []
        for seg in idx.segments(kind="continuous") + idx.segments(kind="event"):
            if total <= quota:
                break
            victims.append(seg)
            total -= seg.bytes
        _delete(idx, victims)
        removed["quota"] += len(victims)
        freed["quota"] += sum(s.bytes for s in victims)
        log.warning("recording %s over its quota: removed its %d oldest segments", cam, len(victims))
    usage = disk_usage or (lambda: _usage(library))
    used, total_disk = usage()
    mark = total_disk * policy.max_disk_percent / 100.0
    if used > mark:
        over = used - mark * LOW_RATIO  # a little under the mark, so that it does not run per segment
        for kind in ("continuous", "event"):
            pool = sorted(
                ((s, cam) for cam in cams for s in library.index(cam).segments(kind=kind)),
                key=lambda p: p[0].start_ms,
            )
            for seg, cam in pool:
                if over <= 0:
                    break
                _delete(library.index(cam), [seg])
                over -= seg.bytes
                removed["watermark"] += 1
                freed["watermark"] += seg.bytes
        log.warning("recording disk over %.0f %%: removed the %d oldest segments", policy.max_disk_percent,
                    removed["watermark"])  # fmt: skip
    for reason, n in removed.items():
        if n and reason != "watermark":
            log.info("recording retention (%s): removed %d segments, %d bytes", reason, n, freed[reason])
    return removed


def _usage(library: Library) -> tuple[int, int]:
    u = shutil.disk_usage(library.root)
    return u.used, u.total

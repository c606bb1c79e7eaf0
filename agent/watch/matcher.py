"""Matching one new target against the watch tasks that cover its device at its time: pure functions.

- A task covers a target when its DeviceList holds the target's device (or "ALL"; an empty list covers nothing,
  as the seed says) and its schedule (``agent.box.schedules``, site time zone) is active at the target's time.
- A policy applies when its TargetType is the target's type.
- ByImage: cosine similarity (numpy, exact) between the target's embedding and each item's; the best item is
  "in the list" when its similarity reaches the policy's threshold. A target without an embedding (no embedder
  for its type) is not judged by a ByImage policy at all (counted as ``unjudged``), so NotifyIfNotInList never
  alerts for a face it could not compare.
- ByAttributes: an item matches when every condition holds: the target has the attribute key with one of the
  item's values (Age also accepts ``lo-hi`` ranges), with at least the condition's Score when one is given.
- NotifyIfInList alerts on a match, NotifyIfNotInList on no match, NotifyAnyway always (with the best item
  when there is one). One alert per (task, policy, target); its AlertId is a pure function of the three, so a
  re-sent alert has the same id.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

import numpy as np

from agent.box.schedules import Schedule, is_active, parse_schedule
from agent.watch.model import AttributeCondition, WatchItem, WatchPolicy, WatchTask

if TYPE_CHECKING:
    from agent.analytics.targets import TargetRecord


@dataclass(frozen=True, slots=True)
class Alert:
    alert_id: str
    task_id: str
    policy_id: str
    matched: bool
    item: WatchItem | None
    similarity: float | None


def alert_id(task_id: str, policy_id: str, target_id: str) -> str:
    return hashlib.sha256(f"{task_id}\x1f{policy_id}\x1f{target_id}".encode()).hexdigest()[:32]


def task_schedule(task: WatchTask, tz: str) -> Schedule:
    return parse_schedule(
        task.schedule_type,
        json.dumps(task.cycle_dates),
        json.dumps(task.times),
        tz=tz,
        once_date=date.fromisoformat(task.once_date) if task.once_date else None,
        overlap="reject",
    )


def _attr_holds(cond: AttributeCondition, record: TargetRecord) -> bool:
    for a in record.attributes:
        if a.key != cond.key:
            continue
        if cond.score is not None and (a.score is None or a.score < cond.score):
            continue
        for v in cond.values:
            if a.value == v:
                return True
            if cond.key == "Age" and "-" in v:
                lo, _, hi = v.partition("-")
                try:
                    if float(lo) <= float(a.value) <= float(hi):
                        return True
                except ValueError:
                    continue
    return False


def best_by_attributes(record: TargetRecord, items: list[WatchItem]) -> WatchItem | None:
    for it in items:
        if it.attributes and all(_attr_holds(c, record) for c in it.attributes):
            return it
    return None


def best_by_image(record: TargetRecord, items: list[WatchItem]) -> tuple[WatchItem | None, float | None]:
    """The most similar item with an embedding of the same size, and its cosine similarity."""
    if record.embedding is None:
        return None, None
    q = np.asarray(record.embedding, dtype=np.float32).reshape(-1)
    qn = float(np.linalg.norm(q))
    if qn == 0:
        return None, None
    best: WatchItem | None = None
    best_sim: float | None = None
    for it in items:
        if not it.embedding or len(it.embedding) != q.size:
            continue
        e = np.asarray(it.embedding, dtype=np.float32)
        en = float(np.linalg.norm(e))
        if en == 0:
            continue
        sim = float(np.dot(q, e) / (qn * en))
        if best_sim is None or sim > best_sim:
            best, best_sim = it, sim
    return best, best_sim


class Matcher:
    """Matches records against a book snapshot; schedules are parsed once per task and book version."""

    def __init__(self, tz: str) -> None:
        self.tz = tz
        self._schedules: dict[str, tuple[int, Schedule | None]] = {}
        self.unjudged = 0
        self.bad_schedules = 0

    def _schedule(self, task: WatchTask, version: int) -> Schedule | None:
        got = self._schedules.get(task.task_id)
        if got is not None and got[0] == version:
            return got[1]
        try:
            sched: Schedule | None = task_schedule(task, self.tz)
        except ValueError:
            self.bad_schedules += 1
            sched = None
        self._schedules[task.task_id] = (version, sched)
        return sched

    def match(
        self,
        record: TargetRecord,
        tasks: list[WatchTask],
        policies: dict[str, WatchPolicy],
        items: dict[str, list[WatchItem]],
        version: int = 0,
    ) -> list[Alert]:
        out: list[Alert] = []
        for task in tasks:
            if not task.covers(record.device_id):
                continue
            sched = self._schedule(task, version)
            if sched is None or not is_active(sched, record.timestamp):
                continue
            for pid in task.policy_ids:
                policy = policies.get(pid)
                if policy is None or policy.target_type != record.target_type:
                    continue
                its = items.get(pid, [])
                item: WatchItem | None
                sim: float | None = None
                if policy.match_type == "ByImage":
                    if record.embedding is None:
                        self.unjudged += 1
                        continue
                    item, sim = best_by_image(record, [i for i in its if i.embedding])
                    matched = item is not None and sim is not None and sim >= policy.effective_threshold
                else:
                    item = best_by_attributes(record, its)
                    matched = item is not None
                if policy.mode == "NotifyIfInList" and not matched:
                    continue
                if policy.mode == "NotifyIfNotInList" and matched:
                    continue
                out.append(
                    Alert(
                        alert_id=alert_id(task.task_id, pid, record.target_id),
                        task_id=task.task_id,
                        policy_id=pid,
                        matched=matched,
                        item=item if matched else None,
                        similarity=None if sim is None else round(sim, 4),
                    )
                )
        return out

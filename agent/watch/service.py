"""The ``watch`` service: each new target matched once against the watch tasks, alerts through the outbox to
each task's MessageReceiver (Kafka).

The service subscribes to the target bus (targets are published once, after the store committed them), matches
each record (``agent.watch.matcher``) and queues one outbox row per alert for the directed sink "watch" in one
transaction, so an alert is durable before anything is sent. The sink sends a row to the Kafka receiver of the
row's task as it is when the row leaves (one producer per distinct receiver), and the row is deleted only after
that broker's ack. A row whose task was deleted meanwhile is dropped (counted). Rows are read in id order, one
cursor for all tasks, so one receiver that is down holds back the others once the in-flight window is full:
alerts wait in the outbox, none is lost.

The alert's key is the device id (order per camera); its ``AlertId`` is a pure function of task, policy and
target, so a resend after an outage or a crash carries the same id.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from agent.ops.metrics import Sample
from agent.reporting.kafka import KafkaSettings, KafkaSink, Routed
from agent.reporting.sinks import SinkRunner
from agent.storage.outbox import OutboxEntry
from agent.watch.book import WatchBook
from agent.watch.matcher import Alert, Matcher
from agent.watch.model import MessageReceiver

if TYPE_CHECKING:
    from agent.analytics.targets import TargetRecord
    from agent.box.ports import TargetBus
    from agent.storage.store import TargetStore

log = logging.getLogger("vcs_edge.watch")

SINK = "watch"


def receiver_settings(r: MessageReceiver, client_id: str) -> KafkaSettings:
    return KafkaSettings(
        servers=r.servers,
        sasl_mechanism=r.sasl_type,
        username=r.username,
        password=r.password,
        tls=r.tls,
        ca_location=r.ca_location,
        tls_insecure=r.tls_insecure,
        client_id=client_id,
    )


def alert_body(alert: Alert, record: TargetRecord, book: WatchBook) -> dict[str, Any]:
    task = book.tasks.get(alert.task_id)
    policy = book.policies.get(alert.policy_id)
    return {
        "AlertId": alert.alert_id,
        "WatchTaskId": alert.task_id,
        "TaskName": task.name if task else "",
        "WatchPolicyId": alert.policy_id,
        "WatchPolicyName": policy.name if policy else "",
        "WatchMode": policy.mode if policy else "",
        "ItemMatchType": policy.match_type if policy else "",
        "InList": alert.matched,
        "WatchItemId": alert.item.item_id if alert.item else "",
        "WatchItemName": alert.item.name if alert.item else "",
        "Similarity": alert.similarity,
        "target": json.loads(record.to_json()),
    }


def render_alert(body: str, url_for: Callable[[str], str] | None) -> bytes:
    """The alert as sent: the stored fields plus ``Target``, the SearchTarget record with fresh signed links."""
    from agent.analytics.targets import TargetRecord

    data = json.loads(body)
    internal = data.pop("target")
    data["Target"] = TargetRecord.from_json(json.dumps(internal)).to_api(url_for)
    return json.dumps(data, ensure_ascii=False).encode()


class WatchService:
    name = "watch"

    def __init__(
        self,
        book: WatchBook,
        store: TargetStore,
        targets: TargetBus,
        url_for: Callable[[str], str],
        tz: str,
        site_name: str,
    ) -> None:
        self.book = book
        self.store = store
        self.outbox = store.outbox
        self.targets = targets
        self.url_for = url_for
        self.matcher = Matcher(tz)
        self.client_id = f"vcs-edge-{site_name}-watch"
        self.sink = KafkaSink(SINK, self._route)
        self.runner: SinkRunner | None = None
        self.matched_targets = 0
        self.alerts = 0
        self.queue_failures = 0
        self._unsubscribe: Callable[[], None] | None = None

    def _route(self, entry: OutboxEntry) -> Routed | None:
        task_id = json.loads(entry.body).get("WatchTaskId", "")
        task = self.book.tasks.get(task_id)
        if task is None:
            log.warning("watch: alert %s of deleted task %s dropped", entry.key, task_id)
            return None
        settings = receiver_settings(task.receiver, self.client_id)
        return Routed(settings, task.receiver.topic, entry.device_id, render_alert(entry.body, self.url_for))

    def register_routes(self, routes: list[web.RouteDef]) -> None:
        return None

    async def start(self) -> None:
        self.outbox.add_directed_sink(SINK)
        self.runner = SinkRunner(self.outbox, self.sink)
        self.runner.start()
        self._unsubscribe = self.targets.subscribe(self.on_targets)
        await asyncio.get_running_loop().run_in_executor(None, self.catch_up)

    def catch_up(self) -> None:
        """Match the targets stored after the watermark (a crash between a target's commit and its alerts'),
        once, at start. A box that never ran the matcher starts at the newest target: the past is not alerted."""
        if self.book.mark is None:
            self.book.set_mark(self.store.last_seq())
            return
        n = 0
        while True:
            batch = self.store.after_seq(self.book.mark or 0)
            if not batch:
                break
            self._match([r for _, r in batch])
            self.book.set_mark(batch[-1][0])
            n += len(batch)
        if n:
            log.info("watch: matched %d targets stored before the last stop", n)

    def on_targets(self, records: list[TargetRecord]) -> None:
        if self._match(records):
            try:
                self.book.set_mark(self.store.last_seq([r.target_id for r in records]))
            except Exception:
                log.exception("watch: the watermark could not be written")

    def _match(self, records: list[TargetRecord]) -> bool:
        """Queue the alerts of ``records``; False when they could not be queued (the watermark stays)."""
        if not self.book.tasks:
            return True
        tasks, policies, items = self.book.snapshot()
        version = self.book.version
        rows: list[tuple[str, str, str, str]] = []
        for record in records:
            self.matched_targets += 1
            for alert in self.matcher.match(record, tasks, policies, items, version):
                body = json.dumps(alert_body(alert, record, self.book), ensure_ascii=False)
                rows.append(("alert", record.device_id, alert.alert_id, body))
        if not rows:
            return True
        try:
            self.outbox.enqueue_to(SINK, rows)
        except Exception:
            self.queue_failures += 1
            log.exception("watch: %d alerts could not be queued", len(rows))
            return False
        self.alerts += len(rows)
        return True

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self.runner is not None:
            await asyncio.to_thread(self.runner.stop, 3.0)
            self.runner = None

    def samples(self) -> Iterable[Sample]:
        yield Sample("vcs_edge_watch_alerts_total", "counter", "Watch alerts queued", {}, float(self.alerts))
        yield Sample(
            "vcs_edge_watch_targets_total",
            "counter",
            "Targets matched against watch tasks",
            {},
            float(self.matched_targets),
        )
        yield Sample(
            "vcs_edge_watch_unjudged_total",
            "counter",
            "Targets a ByImage policy could not judge (no embedding)",
            {},
            float(self.matcher.unjudged),
        )
        s = self.sink
        for key in ("produced", "acked", "failed", "dropped"):
            yield Sample(
                f"vcs_edge_watch_kafka_{key}_total",
                "counter",
                f"Watch alerts to Kafka: {key}",
                {},
                float(getattr(s, key)),
            )

    def health(self) -> dict[str, Any]:
        return {
            "tasks": len(self.book.tasks),
            "policies": len(self.book.policies),
            "pending": self.outbox.count(SINK),
        }

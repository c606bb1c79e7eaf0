"""Prometheus metrics, read at scrape time from the objects that count (no metric calls on the hot path).

Each stage keeps plain integer counters on its own objects; this collector turns them into metric families when
``/metrics`` is scraped. Components register a callable that returns their current figures.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

Labels = Mapping[str, str]


@dataclass(frozen=True)
class Sample:
    name: str
    kind: str  # "counter" or "gauge"
    help: str
    labels: Labels
    value: float


Provider = Callable[[], Iterable[Sample]]


class AgentCollector(Collector):
    def __init__(self) -> None:
        self._providers: dict[str, Provider] = {}

    def register(self, key: str, provider: Provider) -> None:
        self._providers[key] = provider

    def unregister(self, key: str) -> None:
        self._providers.pop(key, None)

    def collect(self) -> Iterable[Metric]:
        families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {}
        for provider in list(self._providers.values()):
            for s in provider():
                fam = families.get(s.name)
                if fam is None:
                    cls = CounterMetricFamily if s.kind == "counter" else GaugeMetricFamily
                    fam = cls(s.name, s.help, labels=sorted(s.labels))
                    families[s.name] = fam
                fam.add_metric([s.labels[k] for k in sorted(s.labels)], s.value)
        return list(families.values())


def new_registry() -> tuple[CollectorRegistry, AgentCollector]:
    registry = CollectorRegistry(auto_describe=False)
    collector = AgentCollector()
    registry.register(collector)
    return registry, collector

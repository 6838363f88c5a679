"""Counter and histogram families for the per-message path, without locks.

prometheus_client's own metrics take a lock on every update (they may be updated from
any thread). A stage updates these only from its event loop, once or twice per message
per hop, so they keep plain numbers and become metric families when scraped, as the
gateway's ``Deliveries`` does. Same names and labels as the library's metrics.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector


class Count:
    """One labelled counter (``inc``)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class Timings:
    """One labelled histogram (``observe``)."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value


class _Family(Collector):
    def __init__(self, name: str, doc: str, labels: Sequence[str],
                 registry: CollectorRegistry) -> None:
        self.name, self.doc, self.labelnames = name, doc, list(labels)
        registry.register(self)

    def _check(self, values: tuple[str, ...]) -> None:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {values}")


class HotCounter(_Family):
    """A counter family: ``labels(...)`` gives a ``Count``; exposed as ``<name>_total``."""

    def __init__(self, name: str, doc: str, labels: Sequence[str],
                 registry: CollectorRegistry) -> None:
        self._children: dict[tuple[str, ...], Count] = {}
        super().__init__(name, doc, labels, registry)

    def labels(self, *values: str) -> Count:
        child = self._children.get(values)
        if child is None:
            self._check(values)
            child = self._children[values] = Count()
        return child

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.doc, labels=self.labelnames)
        for values, child in sorted(self._children.items()):
            family.add_metric(list(values), child.value)
        yield family


class HotHistogram(_Family):
    """A histogram family: ``labels(...)`` gives a ``Timings``."""

    def __init__(self, name: str, doc: str, labels: Sequence[str],
                 registry: CollectorRegistry, buckets: Sequence[float]) -> None:
        self.buckets = tuple(sorted(buckets))
        self._children: dict[tuple[str, ...], Timings] = {}
        super().__init__(name, doc, labels, registry)

    def labels(self, *values: str) -> Timings:
        child = self._children.get(values)
        if child is None:
            self._check(values)
            child = self._children[values] = Timings(self.buckets)
        return child

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.doc, labels=self.labelnames)
        for values, child in sorted(self._children.items()):
            cumulative, total = [], 0
            for bound, count in zip((*self.buckets, math.inf), child.counts, strict=True):
                total += count
                cumulative.append(("+Inf" if math.isinf(bound) else repr(float(bound)),
                                   float(total)))
            family.add_metric(list(values), cumulative, sum_value=child.sum)
        yield family

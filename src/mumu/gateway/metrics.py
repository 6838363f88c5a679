"""Prometheus metrics of one gateway process (its own registry, no globals)."""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from mumu.gateway.hub import ResultEvent
from mumu.runtime.build_info import register_build_info

DELIVERY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        register_build_info(r, "gateway")
        self.requests = Counter(
            "mumu_gateway_requests", "HTTP requests, by route and status", ["route", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "mumu_gateway_request_seconds", "HTTP request duration", ["route"],
            buckets=(*DELIVERY_BUCKETS, 10, 30, 60, 120), registry=r,
        )
        self.sockets = Gauge("mumu_gateway_websockets", "Open websockets", registry=r)
        self.deliveries = Deliveries()
        r.register(self.deliveries)
        self.slow_clients = Counter(
            "mumu_gateway_slow_clients", "Websockets closed for falling behind", registry=r
        )
        self.permission_violations = Counter(
            "mumu_nats_permission_violations",
            "Publishes or subscriptions the NATS server refused this process, by subject",
            ["stage", "subject"],
            registry=r,
        )
        self.asks = Counter("mumu_gateway_asks", "Asks published, by kind", ["kind"], registry=r)
        self.rejected = Counter(
            "mumu_gateway_rejected", "Requests refused, by reason", ["reason"], registry=r
        )

    def sent(self, event: ResultEvent) -> None:
        self.deliveries.sent(event.type, event.published_at)


class Deliveries(Collector):
    """``mumu_gateway_events_sent{type}`` and ``mumu_gateway_delivery_seconds``: counted in
    plain integers, once per event on every socket, and turned into metrics only when
    scraped (prometheus_client's own counter and histogram take a lock per update)."""

    def __init__(self) -> None:
        self.by_type: dict[str, int] = {}
        self.buckets = [0] * (len(DELIVERY_BUCKETS) + 1)
        self.seconds = 0.0

    def sent(self, kind: str, published_at: float) -> None:
        by_type = self.by_type
        by_type[kind] = by_type.get(kind, 0) + 1
        if published_at:
            took = max(0.0, time.time() - published_at)
            self.buckets[bisect_left(DELIVERY_BUCKETS, took)] += 1
            self.seconds += took

    def collect(self) -> Iterator[Metric]:
        sent = CounterMetricFamily(
            "mumu_gateway_events_sent", "Results sent to websockets, by type", labels=["type"])
        for kind, count in sorted(self.by_type.items()):
            sent.add_metric([kind], count)
        yield sent
        cumulative, total = [], 0
        for bound, count in zip((*DELIVERY_BUCKETS, float("inf")), self.buckets, strict=True):
            total += count
            cumulative.append(("+Inf" if math.isinf(bound) else repr(float(bound)), float(total)))
        yield HistogramMetricFamily(
            "mumu_gateway_delivery_seconds",
            "From the event's JetStream timestamp to the websocket write",
            buckets=cumulative, sum_value=self.seconds)

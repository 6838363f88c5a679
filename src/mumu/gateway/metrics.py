"""Prometheus metrics of one gateway process (its own registry, no globals)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from mumu.gateway.hub import ResultEvent

DELIVERY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "mumu_gateway_requests", "HTTP requests, by route and status", ["route", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "mumu_gateway_request_seconds", "HTTP request duration", ["route"],
            buckets=(*DELIVERY_BUCKETS, 10, 30, 60, 120), registry=r,
        )
        self.sockets = Gauge("mumu_gateway_websockets", "Open websockets", registry=r)
        self.events_sent = Counter(
            "mumu_gateway_events_sent", "Results sent to websockets, by type", ["type"],
            registry=r,
        )
        self.delivery_seconds = Histogram(
            "mumu_gateway_delivery_seconds",
            "From the event's JetStream timestamp to the websocket write", buckets=DELIVERY_BUCKETS,
            registry=r,
        )
        self.slow_clients = Counter(
            "mumu_gateway_slow_clients", "Websockets closed for falling behind", registry=r
        )
        self.asks = Counter("mumu_gateway_asks", "Asks published, by kind", ["kind"], registry=r)
        self.rejected = Counter(
            "mumu_gateway_rejected", "Requests refused, by reason", ["reason"], registry=r
        )

        self._sent_by_type: dict[str, Counter] = {}

    def sent(self, event: ResultEvent) -> None:
        counter = self._sent_by_type.get(event.type)
        if counter is None:
            counter = self._sent_by_type[event.type] = self.events_sent.labels(event.type)
        counter.inc()
        if event.published_at:
            self.delivery_seconds.observe(max(0.0, time.time() - event.published_at))

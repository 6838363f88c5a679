"""``mumu exporter``: the one process that exports every stream's fullness and every
durable consumer's backlog as Prometheus gauges.

Each stage exports only what it does itself; this process reads the figures of all of
them from the JetStream API (``mumu.ops.status``) every ``interval`` seconds, as the
``exporter`` NATS role (read-only), and serves the last reading on ``/metrics``. Run one
per deployment (``mumu up`` starts it; docker-compose.yml has a service): two would
only export the same series twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator

import nats.errors
from nats.aio.client import Client as NATS
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mumu.broker.connect import connect
from mumu.broker.jsapi import JetStreamApiError
from mumu.ops.status import Status, gather
from mumu.runtime.build_info import register_build_info
from mumu.runtime.http import build_probe_app, serve
from mumu.settings import Settings

log = logging.getLogger("mumu.exporter")
ROLE = "exporter"

_STREAM = ["stream", "kind"]
_CONSUMER = ["stream", "consumer"]
_SOURCE = ["stream", "source"]


class StatusCollector(Collector):
    """The last ``Status`` read, as metric families (a stream or consumer that is gone
    disappears from the next scrape: no stale series)."""

    def __init__(self) -> None:
        self.status: Status | None = None
        self.polled_at = 0.0
        self.errors = 0

    def update(self, status: Status) -> None:
        self.status = status
        self.polled_at = time.time()

    def collect(self) -> Iterator[Metric]:
        yield from self._stream_families()
        yield from self._consumer_families()
        yield from self._source_families()
        letters = GaugeMetricFamily(
            "mumu_dlq_letters", "Dead letters kept in MUMU_DLQ, by stage", labels=["stage"])
        for stage, count in self.status.dead_letters if self.status else ():
            letters.add_metric([stage], count)
        yield letters
        errors = CounterMetricFamily(
            "mumu_exporter_poll_errors", "Readings of the JetStream API that failed")
        errors.add_metric([], self.errors)
        yield errors
        last = GaugeMetricFamily(
            "mumu_exporter_last_poll_timestamp_seconds",
            "When the figures were last read (Unix time; 0: never)")
        last.add_metric([], self.polled_at)
        yield last

    def _stream_families(self) -> Iterator[Metric]:
        def family(name: str, doc: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"mumu_jetstream_stream_{name}", doc, labels=_STREAM)

        messages = family("messages", "Messages stored")
        size = family("bytes", "Bytes stored")
        max_messages = family("max_messages", "Message limit (streams with one)")
        max_bytes = family("max_bytes", "Byte limit (streams with one)")
        fullness = family(
            "fullness_ratio",
            "The fuller of messages/max_messages and bytes/max_bytes (0..1); a discard-new "
            "stream refuses writes at 1")
        consumers = family("consumers", "Consumers, durable and ephemeral")
        for s in self.status.streams if self.status else ():
            labels = [s.name, s.kind]
            messages.add_metric(labels, s.messages)
            size.add_metric(labels, s.bytes)
            consumers.add_metric(labels, s.consumers)
            if s.max_messages is not None:
                max_messages.add_metric(labels, s.max_messages)
            if s.max_bytes is not None:
                max_bytes.add_metric(labels, s.max_bytes)
            if (full := s.fullness) is not None:
                fullness.add_metric(labels, full)
        yield from (messages, size, max_messages, max_bytes, fullness, consumers)

    def _consumer_families(self) -> Iterator[Metric]:
        def family(name: str, doc: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"mumu_jetstream_consumer_{name}", doc, labels=_CONSUMER)

        pending = family("pending", "Messages matching the filter not yet delivered")
        ack_pending = family("ack_pending", "Delivered, not yet acknowledged")
        redelivered = family("redelivered", "Delivered more than once, not yet acknowledged")
        ack_floor = family("ack_floor", "Stream sequence below which all is acknowledged")
        oldest = family(
            "oldest_unacked_age_seconds",
            "Age of the oldest message not yet acknowledged (0: nothing waits)")
        waiting = family("waiting_pulls", "Pull requests waiting (about the live replicas)")
        for c in self.status.consumers if self.status else ():
            labels = [c.stream, c.name]
            pending.add_metric(labels, c.pending)
            ack_pending.add_metric(labels, c.ack_pending)
            redelivered.add_metric(labels, c.redelivered)
            ack_floor.add_metric(labels, c.ack_floor)
            oldest.add_metric(labels, c.oldest_unacked_age or 0.0)
            waiting.add_metric(labels, c.waiting_pulls)
        yield from (pending, ack_pending, redelivered, ack_floor, oldest, waiting)

    def _source_families(self) -> Iterator[Metric]:
        lag = GaugeMetricFamily("mumu_jetstream_source_lag",
                                "Messages of a stream's source not yet copied", labels=_SOURCE)
        silent = GaugeMetricFamily(
            "mumu_jetstream_source_silent_seconds",
            "Seconds since the stream last heard from its source (under 1 while sourcing "
            "works)", labels=_SOURCE)
        for f in self.status.sources if self.status else ():
            labels = [f.stream, f.source]
            lag.add_metric(labels, f.lag)
            if f.silent_seconds is not None:
                silent.add_metric(labels, f.silent_seconds)
        yield from (lag, silent)


def exporter_registry(collector: StatusCollector) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(collector)
    register_build_info(registry, ROLE)
    return registry


async def run_exporter(
    settings: Settings, host: str, port: int, interval: float, stop: asyncio.Event,
    *, started: asyncio.Event | None = None, bound: list[int] | None = None,
) -> None:
    """Serve ``/metrics``, ``/health`` and ``/ready`` on ``host:port`` and read the
    figures every ``interval`` seconds until ``stop``. ``bound`` gets the port."""
    collector = StatusCollector()
    nc = await connect(settings.nats, name="mumu-exporter", role=ROLE)

    def not_ready() -> list[str]:
        reasons = [] if nc.is_connected else ["nats: not connected"]
        if collector.status is None:
            reasons.append("exporter: no reading of the JetStream API yet")
        return reasons

    try:
        runner, actual = await serve(
            build_probe_app(exporter_registry(collector), not_ready), host, port)
        try:
            log.info("exporter on http://%s:%d/metrics", host, actual,
                     extra={"stage": ROLE})
            if bound is not None:
                bound.append(actual)
            while not stop.is_set():
                await _poll(nc, collector)
                if started is not None:
                    started.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval)
        finally:
            await runner.cleanup()
    finally:
        with contextlib.suppress(Exception):
            await nc.drain()


async def _poll(nc: NATS, collector: StatusCollector) -> None:
    try:
        collector.update(await gather(nc))
    except (JetStreamApiError, nats.errors.Error, TimeoutError, KeyError, ValueError) as exc:
        collector.errors += 1
        log.warning("reading the JetStream API failed: %r", exc, extra={"stage": ROLE})

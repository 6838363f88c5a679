"""Prometheus metrics of one stage process (own registry, no globals)."""

from __future__ import annotations

from collections.abc import Sized

from prometheus_client import CollectorRegistry, Counter, Gauge

from mumu.runtime.build_info import register_build_info
from mumu.runtime.hot_metrics import HotCounter, HotHistogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class StageMetrics:
    def __init__(self, stage: str, registry: CollectorRegistry | None = None) -> None:
        self.stage = stage
        self.registry = registry or CollectorRegistry()
        r = self.registry
        register_build_info(r, stage)
        # the per-message families: updated from the event loop only, so without locks
        self.messages = HotCounter(
            "mumu_stage_messages",
            "Messages handled, by outcome: ack, nak and term once per delivery; retry per "
            "retry in place; hold once per delivery held on its last delivery",
            ["stage", "route", "outcome"],
            r,
        )
        self.latency = HotHistogram(
            "mumu_stage_latency_seconds",
            "Handling time per message (receive to ack)",
            ["stage", "route"],
            r,
            LATENCY_BUCKETS,
        )
        self.inflight = Gauge(
            "mumu_stage_inflight", "Messages being handled", ["stage"], registry=r
        )
        self._inflight: list[Sized] = []
        self.inflight.labels(stage).set_function(lambda: sum(map(len, self._inflight)))
        self.redeliveries = Counter(
            "mumu_stage_redeliveries", "Deliveries after the first", ["stage", "route"], registry=r
        )
        self.held = Gauge(
            "mumu_stage_held_messages",
            "Messages held on their last delivery while a dependency is down (never "
            "dead-lettered), by reason",
            ["stage", "route", "reason"],
            registry=r,
        )
        self.dead_letters = Counter(
            "mumu_stage_dead_letters",
            "Messages dead-lettered, by code",
            ["stage", "code"],
            registry=r,
        )
        self.dead_letter_failures = Counter(
            "mumu_stage_dead_letter_failures",
            "Dead letters JetStream refused (MUMU_DLQ full or unreachable): the original "
            "stays unacked in its stream, by code",
            ["stage", "code"],
            registry=r,
        )
        self.dead_letters_over_share = Counter(
            "mumu_stage_dead_letters_over_share",
            "Dead letters not stored because their workspace's share of MUMU_DLQ is full "
            "(one tenant's flood of bad input): the client got its error and the message "
            "was ended, by code",
            ["stage", "code"],
            registry=r,
        )
        self.consumer_lag = Gauge(
            "mumu_consumer_lag",
            "Messages pending on the durable consumer",
            ["stage", "consumer"],
            registry=r,
        )
        self.ack_pending = Gauge(
            "mumu_consumer_ack_pending",
            "Delivered but not yet acknowledged",
            ["stage", "consumer"],
            registry=r,
        )
        self.output_batches = Counter(
            "mumu_stage_output_batches",
            "Output batches of batch routes: stored as one JetStream atomic batch, or "
            "published one by one after the server refused the batch",
            ["stage", "mode"],
            registry=r,
        )
        self.publish_retries = Counter(
            "mumu_stage_publish_retries",
            "Output publishes retried in place while their stream had no leader or sent no "
            "PubAck (an election, a restarting server)",
            ["stage"], registry=r,
        )
        self.once = Counter(
            "mumu_stage_once_outputs",
            "Outputs marked once (finals), by outcome: published; already (an earlier "
            "delivery published it, nothing sent); recovered (found in its stream after "
            "a delivery died mid-way); unrecorded (the workspace's mumu-once-<ws> was unusable: "
            "published with the dedupe window as its only guard)",
            ["stage", "outcome"],
            registry=r,
        )
        self.permission_violations = Counter(
            "mumu_nats_permission_violations",
            "Publishes or subscriptions the NATS server refused this process, by subject",
            ["stage", "subject"],
            registry=r,
        )
        self.model_seconds = Counter(
            "mumu_model_seconds",
            "Seconds spent inside a model (inference)",
            ["stage", "model"],
            registry=r,
        )

    def track_inflight(self, messages: Sized) -> None:
        """``mumu_stage_inflight`` counts ``messages`` (a route's in-flight deliveries) when
        scraped: no gauge update (and its lock) per message on the hot path."""
        self._inflight.append(messages)

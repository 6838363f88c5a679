"""Metrics of the persist stage, on the stage process's own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class PersistMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.batch_rows = Histogram(
            "mumu_persist_batch_rows", "Rows per written batch (one transaction)",
            buckets=BATCH_BUCKETS, registry=registry,
        )
        self.batch_seconds = Histogram(
            "mumu_persist_batch_seconds", "Time to encrypt and commit one batch",
            buckets=SECONDS_BUCKETS, registry=registry,
        )
        self.rows = Counter(
            "mumu_persist_rows", "Rows committed (including idempotent replays)", ["kind"],
            registry=registry,
        )
        self.failed_batches = Counter(
            "mumu_persist_failed_batches", "Batches not written, by reason", ["reason"],
            registry=registry,
        )

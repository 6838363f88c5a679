"""The lock-free stage families expose what prometheus_client's own would."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from mumu.runtime.hot_metrics import HotCounter, HotHistogram

BOUNDS = (0.01, 0.1, 1.0)
VALUES = (0.005, 0.01, 0.05, 0.5, 2.0, 0.1)


def _samples(registry: CollectorRegistry) -> set[str]:
    return {line for line in generate_latest(registry).decode().splitlines()
            if line and not line.startswith("#") and "_created" not in line}


def test_hot_families_expose_the_same_samples_as_the_library() -> None:
    hot, lib = CollectorRegistry(), CollectorRegistry()
    hot_c = HotCounter("m_msgs", "doc", ["stage", "outcome"], hot)
    lib_c = Counter("m_msgs", "doc", ["stage", "outcome"], registry=lib)
    hot_h = HotHistogram("m_secs", "doc", ["stage"], hot, BOUNDS)
    lib_h = Histogram("m_secs", "doc", ["stage"], buckets=BOUNDS, registry=lib)
    for c in (hot_c, lib_c):
        c.labels("s", "ack").inc()
        c.labels("s", "ack").inc(2)
        c.labels("s", "nak")  # created, never counted: exposed as 0
    for h in (hot_h, lib_h):
        for v in VALUES:
            h.labels("s").observe(v)
    assert _samples(hot) == _samples(lib)
    assert hot.get_sample_value("m_secs_bucket", {"stage": "s", "le": "0.01"}) == 2


def test_a_wrong_label_count_is_refused() -> None:
    family = HotCounter("m_x", "doc", ["a", "b"], CollectorRegistry())
    with pytest.raises(ValueError, match="takes labels"):
        family.labels("only-one")

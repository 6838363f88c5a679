"""The benchmarks' own stream, ``MUMU_BENCH``: created by the benchmark that needs it.

It is not in ``streams/``: production servers never get it (and nothing waits for it),
but its subjects (``mumu.bench.hop0..3``) are subject constants, stored by this stream.
"""

from __future__ import annotations

from typing import Any

from nats.aio.client import Client as NATS

from mumu.broker.streams import StreamChange, apply_stream
from mumu.contracts import subjects


def bench_stream_config() -> dict[str, Any]:
    """A fresh copy of the ``MUMU_BENCH`` stream config (JetStream API shape)."""
    return {
        "name": subjects.STREAM_BENCH,
        "description": "Only for benchmarks and runtime tests; created by them",
        "subjects": [p.wildcard for p in subjects.BENCH_HOPS],
        "retention": "limits",
        "storage": "file",
        "discard": "old",
        "max_consumers": -1,
        "max_msgs": -1,
        "max_bytes": 512 * 1024**2,
        "max_age": 600 * 10**9,
        "max_msgs_per_subject": -1,
        "max_msg_size": -1,
        "duplicate_window": 120 * 10**9,
        "num_replicas": 1,
        "allow_direct": True,
        "allow_atomic": True,
    }


async def apply_bench_stream(nc: NATS) -> StreamChange:
    """Create (or update) ``MUMU_BENCH`` on the server of ``nc``."""
    return await apply_stream(nc, bench_stream_config())

"""The benchmarks' own stream, ``MUMU_BENCH``, and its subjects ``mumu.bench.hop0..3``.

None of it is a public contract: it is not in ``streams/`` or ``mumu.contracts``,
production servers never get it (and nothing waits for it); the benchmark that needs it
creates it. The drift test checks these subjects against this stream like the
contracts' subjects against ``streams/``.
"""

from __future__ import annotations

from typing import Any, Final

from nats.aio.client import Client as NATS

from mumu.broker.streams import StreamChange, apply_stream
from mumu.contracts.subjects import SubjectPattern

STREAM_BENCH: Final = "MUMU_BENCH"
BENCH_HOPS: Final = tuple(SubjectPattern(f"mumu.bench.hop{n}") for n in range(4))
"""Subjects of `mumu bench runtime` (hop0 is the source, hop3 the sink)."""


def bench_stream_config() -> dict[str, Any]:
    """A fresh copy of the ``MUMU_BENCH`` stream config (JetStream API shape)."""
    return {
        "name": STREAM_BENCH,
        "description": "Only for benchmarks and runtime tests; created by them",
        "subjects": [p.wildcard for p in BENCH_HOPS],
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

"""Replaying a stream range: republish stored messages so the stages handle them again.

Stages are idempotent (deterministic output ids, upserts on ``event_id``), so a
replay recomputes without duplicating what was already produced inside the
duplicate window, and rewrites stored rows in place.
"""

from __future__ import annotations

from collections.abc import Callable

from nats.aio.client import Client as NATS

from mumu.contracts import headers as h
from mumu.ops.reader import read_range


async def replay_range(
    nc: NATS, stream: str, subject: str, *, from_seq: int, to_seq: int | None,
    tag: str, progress: Callable[[int, int], None] | None = None,
) -> int:
    """Republish messages of ``stream`` on ``subject`` in [from_seq, to_seq]; returns the count."""
    js = nc.jetstream()
    count = 0
    async for stored in read_range(nc, stream, subject, from_seq=from_seq, to_seq=to_seq):
        headers = dict(stored.headers)
        headers[h.MSG_ID] = f"{headers.get(h.MSG_ID, stored.seq)}:replay:{tag}"
        await js.publish(stored.subject, stored.data, headers=headers)
        count += 1
        if progress is not None:
            progress(count, stored.seq)
    return count

"""Reading a range of a stream without disturbing its consumers (ordered consumer)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

from nats.aio.client import Client as NATS
from nats.js.api import ConsumerConfig, DeliverPolicy

from mumu.broker.jsapi import stream_config
from mumu.contracts.subject_check import covers


@dataclass
class Stored:
    seq: int
    subject: str
    data: bytes
    headers: dict[str, str]
    time: datetime


async def read_range(
    nc: NATS, stream: str, subject: str, *, from_seq: int = 1, to_seq: int | None = None,
    limit: int | None = None,
) -> AsyncIterator[Stored]:
    """Messages of ``stream`` on ``subject`` from ``from_seq`` (up to ``to_seq``/``limit``)."""
    js = nc.jetstream()
    info = await js.stream_info(stream, subjects_filter=subject)
    available = sum((info.state.subjects or {}).values())
    last = min(to_seq or info.state.last_seq, info.state.last_seq)
    if available == 0 or from_seq > last:
        return
    sub = await js.subscribe(
        subject, stream=stream, ordered_consumer=True,
        config=ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=max(from_seq, 1)
        ),
    )
    count = 0
    try:
        while limit is None or count < limit:
            try:
                msg = await sub.next_msg(timeout=2)
            except TimeoutError:
                return
            meta = msg.metadata
            if meta.sequence.stream > last:
                return
            count += 1
            yield Stored(meta.sequence.stream, msg.subject, msg.data, dict(msg.headers or {}),
                         meta.timestamp)
            if meta.sequence.stream >= last:
                return
    finally:
        await sub.unsubscribe()


async def stream_of(nc: NATS, subject: str, candidates: list[str]) -> str:
    """The stream (among ``candidates``) whose subjects store ``subject``."""
    for name in candidates:
        config = await stream_config(nc, name)
        if config and any(covers(f, subject) or covers(subject, f)
                          for f in config.get("subjects") or []):  # MUMU_INGEST: sources only
            return name
    raise RuntimeError(f"no mumu stream stores {subject}")

"""Reading dead letters one by one (an ordered consumer), and finding the streams a replay
reads for a stream name or a subject filter."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

from nats.aio.client import Client as NATS
from nats.js.api import ConsumerConfig, DeliverPolicy

from mumu.broker.intake import PLACEHOLDER, intake_template
from mumu.broker.jsapi import stream_config
from mumu.ops.selection import is_stream_name, overlaps


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


async def stored_subjects(nc: NATS, name: str) -> list[str] | None:
    """The subjects stream ``name`` stores (its own and, for ``MUMU_INGEST``, those of the
    intake streams it sources), or None when there is no such stream."""
    config = await stream_config(nc, name)
    if config is None:
        return None
    own: list[str] = list(config.get("subjects") or [])
    if config.get("sources"):
        own += [s.replace(PLACEHOLDER, "*") for s in intake_template()["subjects"]]
    return own


async def streams_for(nc: NATS, target: str, candidates: list[str]) -> list[str]:
    """The streams to read for ``target``: the stream it names, or every stream (among
    ``candidates``) storing subjects its filter matches."""
    if is_stream_name(target):
        if await stream_config(nc, target) is None:
            raise RuntimeError(f"no stream named {target}")
        return [target]
    found = []
    for name in dict.fromkeys(candidates):
        stored = await stored_subjects(nc, name)
        if stored and any(overlaps(target, f) for f in stored):
            found.append(name)
    if not found:
        raise RuntimeError(f"no mumu stream stores {target}")
    return found

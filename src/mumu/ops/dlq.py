"""Dead letters on ``mumu.dlq.<stage>.<ws>``: list, show, replay to the original subject,
purge; of every stage and workspace, or of one stage and/or one workspace."""

from __future__ import annotations

from collections.abc import AsyncIterator

from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError

from mumu.contracts import headers as h
from mumu.contracts import subjects
from mumu.ops.reader import Stored, read_range
from mumu.ops.republish import kept_headers


def dlq_subject(stage: str | None, workspace: str | None = None) -> str:
    """The filter of the letters of ``stage`` and ``workspace`` (None: any)."""
    if workspace is None:
        return subjects.DLQ.stage(stage).wildcard if stage else subjects.DLQ.wildcard
    if stage is None:
        return subjects.DLQ.for_workspace(workspace)
    return subjects.DLQ.stage(stage).for_workspace(workspace)


async def letters(
    nc: NATS, stage: str | None = None, limit: int | None = None, workspace: str | None = None,
) -> AsyncIterator[Stored]:
    subject = dlq_subject(stage, workspace)
    async for stored in read_range(nc, subjects.STREAM_DLQ, subject, limit=limit):
        yield stored


async def letter(nc: NATS, seq: int) -> Stored:
    msg = await nc.jetstream().get_msg(subjects.STREAM_DLQ, seq)
    return Stored(msg.seq or seq, msg.subject or "", msg.data or b"", dict(msg.headers or {}),
                  msg.time)  # type: ignore[arg-type]


def original_headers(stored: Stored) -> dict[str, str]:
    """The headers the message had before it was dead-lettered."""
    prefix = h.DLQ_ORIGINAL_PREFIX
    return {k[len(prefix):]: v for k, v in stored.headers.items() if k.startswith(prefix)}


async def original(nc: NATS, stored: Stored) -> tuple[bytes, dict[str, str]]:
    """The original payload and headers: in the letter, or (too big for it) in their stream."""
    if h.DLQ_BODY_OMITTED not in stored.headers:
        return stored.data, original_headers(stored)
    stream, seq = stored.headers[h.DLQ_STREAM], int(stored.headers[h.DLQ_SEQUENCE])
    try:
        msg = await nc.jetstream().get_msg(stream, seq)
    except NotFoundError as exc:
        raise RuntimeError(
            f"dead letter {stored.seq} was stored without its body and the original "
            f"({stream} #{seq}) is gone from its stream (max_age / limits): cannot replay it"
        ) from exc
    return msg.data or b"", original_headers(stored) or dict(msg.headers or {})


async def replay(nc: NATS, stored: Stored) -> str:
    """Publish the original payload to its original subject, then delete the dead letter.

    The replay gets a new ``Nats-Msg-Id`` (the original one may still be inside the
    stream's duplicate window, which would drop it silently).
    """
    subject = stored.headers[h.DLQ_SUBJECT]
    data, stored_headers = await original(nc, stored)
    # the server refuses some of its own headers on a publish (a sourced message's
    # Nats-Stream-Source, batch and expectation headers)
    headers = kept_headers(stored_headers)
    headers[h.MSG_ID] = f"{stored_headers.get(h.MSG_ID, 'dlq')}:replay:{stored.seq}"
    headers[h.REPLAY] = f"dlq-{stored.seq}"
    headers[h.REPLAY_SOURCE] = f"{subjects.STREAM_DLQ}:{stored.seq}"
    js = nc.jetstream()
    await js.publish(subject, data, headers=headers)
    await js.delete_msg(subjects.STREAM_DLQ, stored.seq)
    return subject


async def purge(nc: NATS, stage: str | None = None, workspace: str | None = None) -> int:
    js = nc.jetstream()
    subject = dlq_subject(stage, workspace)
    info = await js.stream_info(subjects.STREAM_DLQ, subjects_filter=subject)
    count = sum((info.state.subjects or {}).values())
    await js.purge_stream(subjects.STREAM_DLQ, subject=subject)
    return count

"""What became of a message sent to ingest: normalised audio (``mumu.audio.ready``) or a
dead letter, and a valid clip that must still flow after the fuzzing."""

from __future__ import annotations

import asyncio

from nats.aio.client import Client as NATS

from mumu.contracts import headers as h
from mumu.contracts import subjects
from mumu.contracts.events import new_id
from tests.fuzz.audio_strategies import REAL
from tests.harness import Collector, Seen


def outcomes(seen: list[Seen], rid: str) -> list[str]:
    """What became of request ``rid``: "ready" and/or "letter" entries."""
    out = []
    for m in seen:
        if m.subject.startswith(subjects.AUDIO_READY.prefix) and m.json().get("request_id") == rid:
            out.append("ready")
        elif m.headers.get(h.DLQ_ORIGINAL_PREFIX + h.REQUEST_ID) == rid:
            assert m.headers[h.DLQ_CODE] and m.headers[h.DLQ_REASON]
            out.append("letter")
    return out


async def ends_once(seen: Collector, rid: str) -> str:
    await seen.wait_for(lambda ms: bool(outcomes(ms, rid)), timeout=30)
    await asyncio.sleep(0.05)  # a second outcome would come right after the first
    ended = outcomes(seen.messages, rid)
    assert len(ended) == 1, ended
    return ended[0]


async def a_valid_clip_still_flows(nc: NATS, seen: Collector, ws: str) -> None:
    rid = new_id()
    await nc.jetstream().publish(
        subjects.INGEST_AUDIO.for_workspace(ws), REAL[-1].read_bytes(),
        headers={h.CONTENT_TYPE: "audio/wav", h.SESSION: "s", h.REQUEST_ID: rid,
                 h.MSG_ID: f"{ws}.{rid}"})
    await seen.wait_for(lambda ms: outcomes(ms, rid) == ["ready"], timeout=60)

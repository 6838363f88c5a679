"""Publishing asks and reading answers in the reason tests."""

from __future__ import annotations

from nats.aio.client import Client as NATS

from mumu.contracts import headers as h
from mumu.contracts import subjects
from mumu.contracts.events import (
    AnswerDelta,
    AnswerFinal,
    CancelRequest,
    Segment,
    TextAsk,
    TranscriptFinal,
    derive_id,
    new_id,
)
from tests.conftest import provision
from tests.harness import Collector

WS = "ws-reason"


async def ask_text(
    nc: NATS, text: str, session: str = "s1", language: str | None = None
) -> TextAsk:
    rid = new_id()
    ask = TextAsk(
        event_id=rid,
        request_id=rid,
        workspace_id=WS,
        session_id=session,
        text=text,
        language=language,
    )
    await provision(nc, WS)  # what `mumu workspace create` does: its intake stream
    await nc.jetstream().publish(
        subjects.INGEST_TEXT.for_workspace(WS),
        ask.model_dump_json().encode(),
        headers={h.MSG_ID: ask.event_id},
    )
    return ask


async def transcript(
    nc: NATS, text: str, language: str, session: str = "s1", answer: bool = True
) -> TranscriptFinal:
    rid = new_id()
    event = TranscriptFinal(
        event_id=derive_id(WS, rid, "transcribe", "final"),
        request_id=rid,
        workspace_id=WS,
        session_id=session,
        text=text,
        segments=[Segment(id=0, start=0.0, end=2.0, text=text)] if text.strip() else [],
        language=language,
        language_probability=0.98,
        duration=2.0,
        model="base",
        compute_seconds=0.3,
        answer=answer,
    )
    await nc.jetstream().publish(
        subjects.TRANSCRIPT_FINAL.for_workspace(WS),
        event.model_dump_json().encode(),
        headers={h.MSG_ID: event.event_id},
    )
    return event


async def cancel(nc: NATS, request_id: str, session: str = "s1") -> None:
    event = CancelRequest(
        event_id=new_id(), request_id=request_id, workspace_id=WS, session_id=session
    )
    await nc.jetstream().publish(
        subjects.CONTROL_CANCEL.for_workspace(WS),
        event.model_dump_json().encode(),
        headers={h.MSG_ID: event.event_id},
    )


def deltas_of(seen: Collector, request_id: str) -> list[AnswerDelta]:
    out = [AnswerDelta.model_validate_json(m.data) for m in seen.on("mumu.answer.delta.")]
    return [d for d in out if d.request_id == request_id]


def finals_of(seen: Collector, request_id: str) -> list[AnswerFinal]:
    out = [AnswerFinal.model_validate_json(m.data) for m in seen.on("mumu.answer.final.")]
    return [f for f in out if f.request_id == request_id]


async def wait_final(seen: Collector, request_id: str, timeout: float = 20.0) -> AnswerFinal:
    await seen.wait_for(lambda _: bool(finals_of(seen, request_id)), timeout)
    return finals_of(seen, request_id)[0]

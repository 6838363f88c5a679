"""The reason handler in memory (``Inbound.of``): no NATS server, no model server.

The backend is the test-only ``EchoBackend`` (deterministic text) and the session
bucket an in-memory KV; the same behaviours run on real servers in the other files.
"""

from __future__ import annotations

import pytest

from mumu.contracts.events import AnswerDelta, AnswerFinal, TextAsk, TranscriptFinal, new_id
from mumu.runtime import Inbound, PermanentError, TransientError
from mumu.stages.reason.sessions import SessionStore
from mumu.stages.reason.settings import ReasonSettings
from mumu.stages.reason.stage import ReasonStage
from tests.reason.echo_backend import EchoBackend
from tests.reason.memory_kv import MemoryKV

WS = "ws-mem"


def reason(backend: EchoBackend) -> ReasonStage:
    settings = ReasonSettings(delta_interval=0.01)
    sessions = SessionStore(MemoryKV(), max_turns=8, turn_ttl=3600,  # type: ignore[arg-type]
                            cas_attempts=3)
    return ReasonStage(settings, backend, sessions)


def text_ask(text: str, session: str = "s1") -> Inbound[TextAsk]:
    rid = new_id()
    ask = TextAsk(event_id=rid, request_id=rid, workspace_id=WS, session_id=session, text=text)
    return Inbound.of(ask, subject=f"mumu.ingest.text.{WS}")


async def test_an_ask_streams_deltas_then_returns_the_final() -> None:
    backend = EchoBackend()
    backend.calls = 1  # past its one scripted failure
    stage = reason(backend)
    inbound = text_ask("What is 2+2?")
    (out,) = await stage.handle(inbound)
    final = AnswerFinal.model_validate_json(out.payload)
    assert out.subject == f"mumu.answer.final.{WS}"
    assert final.text == "You asked: What is 2+2?"
    deltas = [AnswerDelta.model_validate_json(o.payload) for o in inbound.emitted]
    assert [d.index for d in deltas] == list(range(len(deltas)))
    assert "".join(d.text for d in deltas) == final.text
    assert {o.subject for o in inbound.emitted} == {f"mumu.answer.delta.{WS}"}
    # answered once: the same request again returns the recorded final, no model call
    again = Inbound.of(inbound.body(), subject=inbound.subject, deliveries=2)
    assert await stage.handle(again) == [out]
    assert backend.calls == 2 and again.emitted == []


async def test_a_busy_backend_is_a_transient_error_the_runtime_may_retry_in_place() -> None:
    stage = reason(EchoBackend())  # its first call fails (retryable, Retry-After 0.1)
    inbound = text_ask("Anyone there?")
    with pytest.raises(TransientError) as caught:
        await stage.handle(inbound)
    assert (caught.value.code, caught.value.delay, caught.value.in_place) == (
        "reason_unavailable", 0.1, True)
    assert inbound.emitted == []  # nothing shown: a retry in place is safe
    (out,) = await stage.handle(inbound)  # the runtime's retry in place
    assert AnswerFinal.model_validate_json(out.payload).text == "You asked: Anyone there?"
    first = AnswerDelta.model_validate_json(inbound.emitted[0].payload)
    assert not first.restart  # the failed attempt showed nothing: no restart


async def test_an_empty_question_is_permanent_and_a_transcribe_only_request_is_skipped() -> None:
    stage = reason(EchoBackend())
    with pytest.raises(PermanentError) as caught:
        await stage.handle(text_ask("   "))
    assert caught.value.code == "no_speech"
    rid = new_id()
    only = TranscriptFinal(
        event_id=rid, request_id=rid, workspace_id=WS, session_id="s1", text="Write this.",
        segments=[], language="en", language_probability=0.9, duration=1.0, model="base",
        compute_seconds=0.1, answer=False)
    assert await stage.handle(Inbound.of(only, subject=f"mumu.transcript.final.{WS}")) == []

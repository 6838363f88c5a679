"""The reason stage against a real OpenAI-compatible server (llama.cpp, default GGUF)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from nats.aio.client import Client as NATS

from mumu.contracts import subjects
from mumu.contracts.consumers import REASON_TEXT
from mumu.contracts.events import PipelineError
from mumu.settings import Settings
from mumu.stages.reason.sessions import SessionStore
from mumu.stages.reason.stage import build_stage
from tests.harness import Collector, running
from tests.reason.asks import WS, ask_text, deltas_of, finals_of, transcript, wait_final
from tests.reason.conftest import ModelServer, reason_settings


async def test_text_ask_streams_deltas_then_one_final(
    nc: NATS, streams: None, settings: Settings, model_server: ModelServer
) -> None:
    cfg = reason_settings(settings, model_server.base_url, max_tokens=64)
    async with running(build_stage(cfg), cfg), Collector(nc) as seen:
        ask = await ask_text(nc, "What is the capital of France?")
        final = await wait_final(seen, ask.request_id)
    deltas = deltas_of(seen, ask.request_id)
    assert deltas, "no delta before the final"
    assert [d.index for d in deltas] == list(range(len(deltas)))
    assert "".join(d.text for d in deltas) == final.text
    assert "Paris" in final.text
    assert len(finals_of(seen, ask.request_id)) == 1
    # deltas come before the final on the wire
    order = [m.subject for m in seen.messages if m.subject.startswith("mumu.answer.")]
    assert order[-1] == f"mumu.answer.final.{WS}"
    assert all(s == f"mumu.answer.delta.{WS}" for s in order[:-1])
    # at most a delta a token (coalescing itself, which depends on how fast tokens come:
    # tests/reason/test_delta_coalescing.py)
    assert len(deltas) <= final.usage.completion_tokens
    assert final.model == "smollm2"
    assert final.question == "What is the capital of France?"
    assert final.time_to_first_token is not None
    assert 0 < final.time_to_first_token <= final.total_seconds
    assert not final.cancelled
    assert all(not d.restart and d.attempt == 1 for d in deltas)


async def test_second_turn_carries_the_first_and_the_transcript_language(
    nc: NATS, streams: None, settings: Settings, model_server: ModelServer
) -> None:
    cfg = reason_settings(settings, model_server.base_url)
    before = len(model_server.requests())
    async with running(build_stage(cfg), cfg), Collector(nc) as seen:
        first = await transcript(
            nc, "Wie heisst die Hauptstadt von Deutschland?", "de", session="s-two"
        )
        one = await wait_final(seen, first.request_id)
        second = await ask_text(nc, "And what about Italy?", session="s-two")
        await wait_final(seen, second.request_id)
    received = model_server.requests()[before:]
    assert len(received) == 2
    first_prompt, second_prompt = received[0]["messages"], received[1]["messages"]
    assert first_prompt[0]["role"] == "system"
    assert "German" in first_prompt[0]["content"]
    assert [m["role"] for m in first_prompt] == ["system", "user"]
    assert second_prompt[1:] == [
        {"role": "user", "content": first.text},
        {"role": "assistant", "content": one.text},
        {"role": "user", "content": "And what about Italy?"},
    ]
    assert one.language == "de"
    kv = await nc.jetstream().key_value(subjects.BUCKET_SESSIONS)
    slot = SessionStore(kv, max_turns=8, turn_ttl=3600, cas_attempts=1).key(WS, "s-two")
    entry = await kv.get(slot)  # the session's slot entry, <ws>.s<n> (docs/reliability.md)
    assert entry.value is not None
    assert [first.request_id, second.request_id] == [
        t["request_id"] for t in json.loads(entry.value)["sessions"]["s-two"]["turns"]
    ]


async def test_empty_transcript_is_no_speech_without_a_model_call(
    nc: NATS, streams: None, settings: Settings, model_server: ModelServer
) -> None:
    cfg = reason_settings(settings, model_server.base_url)
    before = len(model_server.requests())
    async with running(build_stage(cfg), cfg), Collector(nc) as seen:
        silent = await transcript(nc, "   \n ", "en")
        errors = await seen.wait_count("mumu.error.", 1)
        await seen.wait_count("mumu.dlq.", 1)
    err = PipelineError.model_validate_json(errors[0].data)
    assert (err.code, err.request_id, err.stage) == ("no_speech", silent.request_id, "reason")
    assert errors[0].subject == f"mumu.error.{WS}"
    assert not seen.on("mumu.answer.")
    assert len(model_server.requests()) == before


async def test_unreachable_backend_is_retried_then_dead_lettered(
    nc: NATS, streams: None, settings: Settings
) -> None:
    from tests.reason.conftest import free_port

    cfg = reason_settings(settings, f"http://127.0.0.1:{free_port()}/v1")
    async with running(build_stage(cfg), cfg), Collector(nc) as seen:
        t0 = time.monotonic()
        ask = await ask_text(nc, "Anyone there?")
        errors = await seen.wait_count("mumu.error.", 1, timeout=20)
        letters = await seen.wait_count("mumu.dlq.", 1)
        elapsed = time.monotonic() - t0
    err = PipelineError.model_validate_json(errors[0].data)
    assert (err.code, err.request_id) == ("reason_unavailable", ask.request_id)
    assert letters[0].headers["Mumu-Dlq-Deliveries"] == str(cfg.stage.max_deliver)
    assert letters[0].subject == subjects.DLQ.stage("reason").for_workspace(err.workspace_id)
    assert elapsed >= sum(cfg.stage.backoff[: cfg.stage.max_deliver - 1])  # growing naks
    assert not seen.on("mumu.answer.")


@pytest.mark.parametrize("max_turns", [8, 0])
async def test_a_request_seen_twice_is_answered_once(
    nc: NATS, streams: None, settings: Settings, model_server: ModelServer, max_turns: int
) -> None:
    """A replay (or a redelivery after the answer was recorded) is not answered again and
    publishes no second final (the runtime's once record of the final; docs/runtime.md,
    "Exactly one final").

    Also with ``max_turns`` 0 (no conversation context): the answer is still kept for this.
    """
    cfg = reason_settings(settings, model_server.base_url, max_turns=max_turns)
    before = len(model_server.requests())
    async with running(build_stage(cfg), cfg), Collector(nc) as seen:
        earlier = await ask_text(nc, "What colour is the sky?", session="s-replay")
        await wait_final(seen, earlier.request_id)
        ask = await ask_text(nc, "What colour is grass?", session="s-replay")
        await wait_final(seen, ask.request_id)
        # the same request again, under another Nats-Msg-Id (a replay from the ingest stream)
        ack = await nc.jetstream().publish(
            subjects.INGEST_TEXT.for_workspace(WS),
            ask.model_dump_json().encode(),
            headers={"Nats-Msg-Id": "replayed-" + ask.event_id},
        )
        await handled(nc, ack.seq)
    received = model_server.requests()[before:]
    assert len(received) == 2  # the model answered each request once
    context = received[1]["messages"][1:-1]  # between the system prompt and the question
    assert len(context) == (2 if max_turns else 0)
    assert len(finals_of(seen, ask.request_id)) == 1  # not even re-sent to subscribers
    info = await nc.jetstream().stream_info(
        subjects.STREAM_RESULTS, subjects_filter=subjects.ANSWER_FINAL.for_workspace(WS)
    )
    final_subject = subjects.ANSWER_FINAL.for_workspace(WS)
    assert info.state.subjects == {final_subject: 2}  # one per request, not 3


async def handled(nc: NATS, intake_seq: int, timeout: float = 30.0) -> None:
    """Until reason has acked everything MUMU_INGEST holds (the replay at ``intake_seq``
    of the intake stream is among it)."""
    js = nc.jetstream()
    async with asyncio.timeout(timeout):
        while True:
            info = await js.consumer_info(REASON_TEXT.stream, REASON_TEXT.durable)
            stream = await js.stream_info(REASON_TEXT.stream)
            if (intake_seq and not info.num_pending and not info.num_ack_pending
                    and info.ack_floor.stream_seq >= stream.state.last_seq):
                return
            await asyncio.sleep(0.1)


async def test_transcribe_only_request_is_not_answered(
    nc: NATS, streams: None, settings: Settings, model_server: ModelServer
) -> None:
    cfg = reason_settings(settings, model_server.base_url)
    before = len(model_server.requests())
    async with running(build_stage(cfg), cfg), Collector(nc) as seen:
        only = await transcript(nc, "Just write this down.", "en", answer=False)
        asked = await ask_text(nc, "What colour is the sky?")
        await wait_final(seen, asked.request_id)  # handled after the transcribe-only one
        info = await nc.jetstream().consumer_info(subjects.STREAM_RESULTS, "reason-mumu-results")
    assert info.num_ack_pending == 0 and info.num_pending == 0  # acked, not left behind
    assert not finals_of(seen, only.request_id)
    assert not deltas_of(seen, only.request_id)
    assert len(model_server.requests()) - before == 1  # only the text ask reached the model

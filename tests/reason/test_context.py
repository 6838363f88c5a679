"""Session context in the real ``mumu-sessions`` KV bucket, and prompt trimming."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import pytest
from nats.aio.client import Client as NATS

from mumu.contracts import subjects
from mumu.contracts.events import AnswerFinal, derive_id, new_id
from mumu.settings import Settings
from mumu.stages.reason.backend import estimate_tokens
from mumu.stages.reason.prompt import PromptTooLong, build_messages, system_message
from mumu.stages.reason.sessions import SessionStore
from mumu.stages.reason.stage import build_stage
from tests.harness import Collector, running
from tests.reason.asks import WS as ASK_WS
from tests.reason.asks import ask_text, deltas_of, wait_final
from tests.reason.conftest import ModelServer, reason_settings

WS = "ws-ctx"


def turn(question: str, answer: str, session: str = "s1", **kw: object) -> AnswerFinal:
    rid = str(kw.pop("request_id", new_id()))
    return AnswerFinal(
        event_id=derive_id(WS, rid, "reason", "final"),
        request_id=rid,
        workspace_id=WS,
        session_id=session,
        question=question,
        text=answer,
        model="m",
        total_seconds=0.1,
        **kw,
    )


async def store(nc: NATS, max_turns: int = 50, ttl: float = 3600) -> SessionStore:
    kv = await nc.jetstream().key_value(subjects.BUCKET_SESSIONS)
    return SessionStore(kv, max_turns=max_turns, turn_ttl=ttl, cas_attempts=50)


async def test_concurrent_turns_of_one_session_are_all_kept(
    nc: NATS, streams: None, caplog: pytest.LogCaptureFixture
) -> None:
    sessions = await store(nc)
    turns = [turn(f"q{n}", f"a{n}") for n in range(12)]
    with caplog.at_level(logging.INFO, logger="mumu.stages.reason.sessions"):
        await asyncio.gather(*(sessions.record(t) for t in turns))
    kept = await sessions.turns(WS, "s1")
    assert {t.request_id for t in kept} == {t.request_id for t in turns}
    assert any("changed under us" in r.getMessage() for r in caplog.records), (
        "no compare-and-set conflict happened, so the test proved nothing"
    )


async def test_last_n_turns_a_retry_replaces_its_own_and_old_turns_expire(
    nc: NATS, streams: None
) -> None:
    sessions = await store(nc, max_turns=3, ttl=600)
    stale = turn("old", "old", occurred_at=datetime.now(UTC) - timedelta(seconds=700))
    await sessions.record(stale)
    assert await sessions.turns(WS, "s1") == []
    recorded = [turn(f"q{n}", f"a{n}") for n in range(4)]
    for t in recorded:
        await sessions.record(t)
    again = turn("q3", "a3 (retried)", request_id=recorded[3].request_id)
    await sessions.record(again)
    kept = await sessions.turns(WS, "s1")
    assert [t.question for t in kept] == ["q1", "q2", "q3"]
    assert kept[-1].text == "a3 (retried)"
    assert await sessions.turns(WS, "other-session") == []


def words(text: str) -> int:
    return len(text.split())


def test_prompt_drops_the_oldest_turns_first_to_fit_the_budget() -> None:
    history = [turn(f"question {n} " + "x " * 10, f"answer {n}") for n in range(5)]
    messages, kept = build_messages(
        system=system_message("Be brief.", "fr"),
        history=history,
        question="last one?",
        count_tokens=words,
        budget=60,
    )
    assert messages[0].role == "system"
    assert "French" in messages[0].content
    assert kept == 3  # system + question: 12 words, each turn 14: 12 + 3 * 14 <= 60
    assert [m.content for m in messages[1::2][:-1]] == [h.question for h in history[2:]]
    assert messages[-1].content == "last one?"
    full, all_kept = build_messages(
        system=system_message("Be brief.", None),
        history=history,
        question="last one?",
        count_tokens=words,
        budget=1000,
    )
    assert all_kept == 5
    assert "language of the question" in full[0].content
    with pytest.raises(PromptTooLong):
        build_messages(
            system=system_message("Be brief.", "en"),
            history=[],
            question="word " * 100,
            count_tokens=words,
            budget=60,
        )


async def test_the_stage_trims_the_oldest_turns_to_the_context_budget(
    nc: NATS, streams: None, settings: Settings, model_server: ModelServer
) -> None:
    """A history longer than ``context_tokens - max_tokens``: the server gets the newest turns."""
    cfg = reason_settings(settings, model_server.base_url, context_tokens=256, max_tokens=16)
    sessions = SessionStore(
        await nc.jetstream().key_value(subjects.BUCKET_SESSIONS),
        max_turns=8,
        turn_ttl=3600,
        cas_attempts=5,
    )
    history = [
        turn(f"Tell me about topic {n}, please. " * 3, f"Topic {n} is a fine topic. " * 6)
        for n in range(5)
    ]
    history = [t.model_copy(update={"workspace_id": ASK_WS}) for t in history]
    for t in history:
        await sessions.record(t)
    before = len(model_server.requests())
    async with running(build_stage(cfg), cfg), Collector(nc) as seen:
        ask = await ask_text(nc, "Which topic came last?", session="s1")
        final = await wait_final(seen, ask.request_id)
    assert not final.cancelled
    # the answer the client saw streamed is the one recorded, and it is the model's reply
    # to this question (greedy, at most max_tokens)
    assert "".join(d.text for d in deltas_of(seen, ask.request_id)) == final.text
    assert final.question == "Which topic came last?"
    assert 0 < final.usage.completion_tokens <= 16
    [received] = model_server.requests()[before:]
    sent = received["messages"]
    assert sent[0]["role"] == "system"
    assert sent[-1] == {"role": "user", "content": "Which topic came last?"}
    context = [m["content"] for m in sent[1:-1]]
    remembered = [text for t in history for text in (t.question, t.text)]
    assert context, "no turn fitted: the test proves nothing"
    assert len(context) < len(remembered)  # the oldest turns were dropped
    assert context == remembered[-len(context) :]  # the newest kept, in order
    assert sum(estimate_tokens(m["content"]) for m in sent) <= 256 - 16

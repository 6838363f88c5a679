"""Cancellation and concurrent turns of one session, against the real llama.cpp server."""

from __future__ import annotations

import asyncio
import json
import time

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from mumu.contracts import subjects
from mumu.contracts.events import AnswerFinal, TextAsk, new_id
from mumu.settings import Settings
from mumu.stages.reason.sessions import SessionStore
from mumu.stages.reason.stage import build_stage
from tests.conftest import provision
from tests.harness import Collector, running
from tests.reason.asks import WS, ask_text, cancel, deltas_of, finals_of, wait_final
from tests.reason.conftest import ModelServer, reason_settings

LONG = "Count from 1 to 300, separated by commas."


async def test_cancel_stops_the_answer_within_100_ms(
    nc: NATS, streams: None, settings: Settings, model_server: ModelServer
) -> None:
    cfg = reason_settings(settings, model_server.base_url, max_tokens=400)
    finals: asyncio.Queue[tuple[float, AnswerFinal]] = asyncio.Queue()

    async def on_final(msg: Msg) -> None:
        finals.put_nowait((time.perf_counter(), AnswerFinal.model_validate_json(msg.data)))

    sub = await nc.subscribe(subjects.ANSWER_FINAL.wildcard, cb=on_final)
    async with running(build_stage(cfg), cfg), Collector(nc) as seen:
        ask = await ask_text(nc, LONG, session="s-cancel")
        await seen.wait_for(lambda _: len(deltas_of(seen, ask.request_id)) >= 3, timeout=20)
        sent = time.perf_counter()
        await cancel(nc, ask.request_id, session="s-cancel")
        arrived, final = await asyncio.wait_for(finals.get(), 5)
        await asyncio.sleep(0.3)  # anything still streaming would show up now
    await sub.unsubscribe()
    assert final.request_id == ask.request_id
    assert final.cancelled
    assert arrived - sent < 0.1, f"final {1000 * (arrived - sent):.0f} ms after the cancel"
    assert 0 < final.usage.completion_tokens < 400
    deltas = deltas_of(seen, ask.request_id)
    assert "".join(d.text for d in deltas) == final.text
    last_delta = max(
        i for i, m in enumerate(seen.messages) if m.subject.startswith("mumu.answer.d")
    )
    first_final = min(
        i for i, m in enumerate(seen.messages) if m.subject.startswith("mumu.answer.f")
    )
    assert last_delta < first_final, "a delta arrived after the cancelled final"
    assert len(finals_of(seen, ask.request_id)) == 1


async def test_cancel_before_the_request_arrives_ends_it_at_once(
    nc: NATS, streams: None, settings: Settings, model_server: ModelServer
) -> None:
    cfg = reason_settings(settings, model_server.base_url)
    before = len(model_server.requests())
    async with running(build_stage(cfg), cfg), Collector(nc) as seen:
        rid = new_id()
        await cancel(nc, rid)
        await asyncio.sleep(0.05)
        ask = TextAsk(event_id=rid, request_id=rid, workspace_id=WS, session_id="s1", text="Hello?")
        await provision(nc, WS)
        await nc.jetstream().publish(
            subjects.INGEST_TEXT.for_workspace(WS), ask.model_dump_json().encode()
        )
        final = await wait_final(seen, rid)
    assert final.cancelled
    assert final.text == ""
    assert len(model_server.requests()) == before  # the model was never called


async def test_concurrent_asks_of_one_session_keep_every_turn(
    nc: NATS, streams: None, settings: Settings, model_server: ModelServer
) -> None:
    cfg = reason_settings(settings, model_server.base_url, max_tokens=8)
    async with running(build_stage(cfg), cfg), Collector(nc) as seen:
        asks = await asyncio.gather(
            *(ask_text(nc, f"Say the number {n}.", session="s-busy") for n in range(4))
        )
        for ask in asks:
            await wait_final(seen, ask.request_id, timeout=30)
    kv = await nc.jetstream().key_value(subjects.BUCKET_SESSIONS)
    slot = SessionStore(kv, max_turns=8, turn_ttl=3600, cas_attempts=1).key(WS, "s-busy")
    entry = await kv.get(slot)  # the session's slot entry, <ws>.s<n> (docs/reliability.md)
    assert entry.value is not None
    stored = {t["request_id"] for t in json.loads(entry.value)["sessions"]["s-busy"]["turns"]}
    assert stored == {a.request_id for a in asks}

"""Exactly one final per request, even when the input is redelivered after the results
stream's dedupe window (``runtime/once.py``), on a real nats-server with the real reason
stage: its first delivery publishes the final, then its process "dies" (the connection
closes, no ack reaches the server) and the server redelivers after ``ack_wait``."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable

import nats.js.errors
import pytest
from nats.aio.client import Client as NATS
from nats.js.kv import KeyValue

from mumu.broker.jsapi import stream_config
from mumu.contracts import headers as h
from mumu.contracts import subjects
from mumu.contracts.consumers import REASON_TEXT
from mumu.contracts.events import TextAsk, new_id
from mumu.ops.reader import read_range
from mumu.ops.shred import purge_workspace
from mumu.runtime.messages import Outbound
from mumu.runtime.metrics import StageMetrics
from mumu.runtime.once import OnceRecords
from mumu.runtime.publisher import Publisher
from mumu.runtime.settle import Delivery, Settler
from mumu.settings import Settings
from mumu.stages.reason.stage import ReasonStage
from tests.harness import Collector, running
from tests.reason.asks import finals_of
from tests.reason.echo_backend import EchoBackend

WS = "ws-once"
WINDOW = 1.0  # the results stream's dedupe window in these tests (seconds; 120 in production)


async def _short_dedupe_window(nc: NATS) -> None:
    config = await stream_config(nc, subjects.STREAM_RESULTS)
    assert config is not None
    config["duplicate_window"] = int(WINDOW * 1e9)
    await nc.request(f"$JS.API.STREAM.UPDATE.{subjects.STREAM_RESULTS}",
                     json.dumps(config).encode(), timeout=5)
    assert (await stream_config(nc, subjects.STREAM_RESULTS) or {})["duplicate_window"] \
        == int(WINDOW * 1e9)


async def _ask(nc: NATS) -> str:
    rid = new_id()
    ask = TextAsk(event_id=rid, request_id=rid, workspace_id=WS, session_id="s", text="2+2?")
    await nc.jetstream().publish(subjects.INGEST_TEXT.for_workspace(WS),
                                 ask.model_dump_json().encode(), headers={h.MSG_ID: rid})
    return rid


async def _stored_finals(nc: NATS, rid: str) -> list[str]:
    subject = subjects.ANSWER_FINAL.for_workspace(WS)
    return [m.headers.get(h.MSG_ID, "") async for m in read_range(
        nc, subjects.STREAM_RESULTS, subject, from_seq=1, to_seq=None)
        if rid.encode() in m.data]


async def _one_final_after_a_late_redelivery(
    nc: NATS, settings: Settings, died: list[str],
) -> tuple[list[str], list[str]]:
    """Ask once; the fault set up by the test kills the first delivery (appending to
    ``died``); wait until the redelivery is acked. The finals the client got and the
    finals MUMU_RESULTS stores (their message ids)."""
    await _short_dedupe_window(nc)
    backend = EchoBackend()
    backend.calls = 1  # past its one "busy" answer
    stage = ReasonStage(settings.reason, backend)
    js = nc.jetstream()
    async with running(stage, settings), Collector(nc, "mumu.answer.final.>") as client:
        rid = await _ask(nc)
        await client.wait_for(lambda _: bool(finals_of(client, rid)), timeout=15)
        async with asyncio.timeout(30):  # redelivered after ack_wait (5 s), past the window
            while not died or (await js.consumer_info(
                    subjects.STREAM_INGEST, REASON_TEXT.durable)).num_ack_pending:
                await asyncio.sleep(0.2)
        await asyncio.sleep(0.5)  # a second final would be on its way by now
    assert len(died) == 1
    assert backend.calls == 2  # one answer generated; the redelivery found it recorded
    return [f.event_id for f in finals_of(client, rid)], await _stored_finals(nc, rid)


async def _record(nc: NATS, msg_id: str) -> bytes:
    kv = await nc.jetstream().key_value(subjects.BUCKET_ONCE)
    return (await kv.get(f"{WS}.reason.{msg_id}")).value or b""


async def test_a_redelivery_after_the_dedupe_window_publishes_no_second_final(
    nc: NATS, workspaces: Callable[..., Awaitable[None]], settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The process dies after the final's PubAck and its record, before the ack."""
    await workspaces(WS)
    ack, died = Settler.ack, list[str]()

    async def ack_or_die(self: Settler, d: Delivery) -> None:
        if not died and d.msg.subject.startswith("mumu.ingest.text."):
            died.append(d.msg.subject)
            await d.msg._client.close()  # noqa: SLF001 - dying: the connection is gone
            return
        await ack(self, d)

    monkeypatch.setattr(Settler, "ack", ack_or_die)
    to_client, stored = await _one_final_after_a_late_redelivery(nc, settings, died)
    assert len(to_client) == 1 and stored == to_client, (to_client, stored)
    assert (await _record(nc, stored[0])).startswith(b"stored:MUMU_RESULTS:")


async def test_a_death_between_the_pub_ack_and_the_record_is_recovered_from_the_stream(
    nc: NATS, workspaces: Callable[..., Awaitable[None]], settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The process dies after the final's PubAck, before its record says so: the record
    is only a claim, and the redelivery finds the final in MUMU_RESULTS."""
    await workspaces(WS)
    mark, died = OnceRecords._mark, list[str]()  # noqa: SLF001

    async def mark_or_die(self: OnceRecords, kv: KeyValue, key: str, value: str) -> None:
        if not died:
            died.append(key)
            await self._nc.close()  # noqa: SLF001 - dying: the connection is gone
            return
        await mark(self, kv, key, value)

    monkeypatch.setattr(OnceRecords, "_mark", mark_or_die)
    to_client, stored = await _one_final_after_a_late_redelivery(nc, settings, died)
    assert len(to_client) == 1 and stored == to_client, (to_client, stored)
    assert (await _record(nc, stored[0])).startswith(b"stored:MUMU_RESULTS:")


async def test_a_shred_purges_the_workspace_once_records_and_no_other(
    nc: NATS, streams: None,
) -> None:
    """The records are ids only, but their keys name the workspace (``mumu keys shred``)."""
    metrics = StageMetrics("reason")
    publisher = Publisher(nc, metrics)
    once = OnceRecords(nc, "reason", publisher, metrics, logging.getLogger("mumu.stage"))
    finals = {ws: Outbound(subjects.ANSWER_FINAL.for_workspace(ws), b"{}", new_id(), once=True)
              for ws in ("ws-shredded", "ws-kept")}
    for out in finals.values():
        await once.publish(out, {})
        await once.publish(out, {})  # the second finds the record: published once
    kv = await nc.jetstream().key_value(subjects.BUCKET_ONCE)
    for out in finals.values():
        assert ((await kv.get(once.key(out))).value or b"").startswith(b"stored:")
    report = await purge_workspace(nc, "ws-shredded")
    assert report.messages[f"KV_{subjects.BUCKET_ONCE}"] == 1
    with pytest.raises(nats.js.errors.KeyNotFoundError):
        await kv.get(once.key(finals["ws-shredded"]))
    assert (await kv.get(once.key(finals["ws-kept"]))).value
    assert metrics.registry.get_sample_value(
        "mumu_stage_once_outputs_total", {"stage": "reason", "outcome": "already"}) == 2

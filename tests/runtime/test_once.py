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
from mumu.broker.workspaces import ensure_workspace
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
    kv = await nc.jetstream().key_value(subjects.once_bucket(WS))
    return (await kv.get(f"reason.{msg_id}")).value or b""


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


def _once(nc: NATS) -> tuple[OnceRecords, StageMetrics]:
    metrics = StageMetrics("reason")
    once = OnceRecords(nc, "reason", Publisher(nc, metrics), metrics,
                       logging.getLogger("mumu.stage"))
    return once, metrics


def _count(metrics: StageMetrics, outcome: str) -> float:
    return metrics.registry.get_sample_value(
        "mumu_stage_once_outputs_total", {"stage": "reason", "outcome": outcome}) or 0.0


def _final(ws: str) -> Outbound:
    return Outbound(subjects.ANSWER_FINAL.for_workspace(ws), b"{}", new_id(), once=True)


async def test_a_shred_purges_the_workspace_once_records_and_no_other(
    nc: NATS, streams: None,
) -> None:
    """The records are ids only, but they are the workspace's (``mumu keys shred``)."""
    once, metrics = _once(nc)
    finals = {ws: _final(ws) for ws in ("ws-shredded", "ws-kept")}
    for ws, out in finals.items():
        await ensure_workspace(nc, ws)
        await once.publish(out, {})
        await once.publish(out, {})  # the second finds the record: published once
    js = nc.jetstream()
    for ws, out in finals.items():
        kv = await js.key_value(subjects.once_bucket(ws))
        assert ((await kv.get(once.key(out))).value or b"").startswith(b"stored:")
    report = await purge_workspace(nc, "ws-shredded")
    assert report.messages[f"KV_{subjects.once_bucket('ws-shredded')}"] == 1
    with pytest.raises(nats.js.errors.KeyNotFoundError):
        await (await js.key_value(subjects.once_bucket("ws-shredded"))).get(
            once.key(finals["ws-shredded"]))
    assert (await (await js.key_value(subjects.once_bucket("ws-kept"))).get(
        once.key(finals["ws-kept"]))).value
    assert _count(metrics, "already") == 2


ROOM = 4096
"""The filling workspace's once bucket in this test: a few dozen records (production's is
``MUMU_NATS__ONCE_MAX_BYTES``, 32 MiB)."""


async def test_a_workspace_filling_its_once_records_costs_no_other_workspace_its_records(
    nc: NATS, streams: None,
) -> None:
    """Each workspace's records are in a bucket of its own (``docs/reliability.md``,
    "Storage bounds"): A's finals fill A's bucket, which refuses further records; A's
    finals are still published (the dedupe window their only guard), and B's are still
    recorded, so a redelivery of B's input past the window publishes nothing."""
    full, kept = "ws-fills-once", "ws-keeps-once"
    await ensure_workspace(nc, full, once_max_bytes=ROOM)
    await ensure_workspace(nc, kept)
    once, metrics = _once(nc)
    flood = [_final(full) for _ in range(120)]
    for out in flood:
        await once.publish(out, {})
    js = nc.jetstream()
    state = (await js.stream_info(f"KV_{subjects.once_bucket(full)}")).state
    assert state.bytes <= ROOM
    recorded, unrecorded = _count(metrics, "published"), _count(metrics, "unrecorded")
    assert unrecorded > 0 and recorded + unrecorded == len(flood), (recorded, unrecorded)
    assert state.messages == recorded  # one record per final recorded; none for the rest
    stored = (await js.stream_info(
        subjects.STREAM_RESULTS, subjects_filter=subjects.ANSWER_FINAL.for_workspace(full)))
    assert stored.state.subjects == {subjects.ANSWER_FINAL.for_workspace(full): len(flood)}

    theirs = _final(kept)
    await once.publish(theirs, {})
    await once.publish(theirs, {})  # as a redelivery past the dedupe window would
    kv = await js.key_value(subjects.once_bucket(kept))
    assert ((await kv.get(once.key(theirs))).value or b"").startswith(b"stored:MUMU_RESULTS:")
    assert _count(metrics, "already") == 1
    assert _count(metrics, "unrecorded") == unrecorded  # B's final was not one of them


async def test_a_workspace_without_its_bucket_gets_its_finals_and_costs_one_lookup(
    nc: NATS, streams: None, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A workspace never provisioned on the broker (no ``mumu-once-<ws>``, or no grant on
    it: then each lookup waits out the request timeout): its finals are published without
    records, and its bucket is looked up once per ``LOOKUP_RETRY``, not once per final."""
    once, metrics = _once(nc)
    js = once._js  # noqa: SLF001 - counting its lookups
    lookups: list[str] = []
    key_value = js.key_value

    async def counted(bucket: str) -> KeyValue:
        lookups.append(bucket)
        return await key_value(bucket)

    monkeypatch.setattr(js, "key_value", counted)
    outs = [_final("ws-unprovisioned") for _ in range(5)]
    for out in outs:
        await once.publish(out, {})
    assert lookups == [subjects.once_bucket("ws-unprovisioned")]
    assert _count(metrics, "unrecorded") == len(outs)
    stored = await js.stream_info(subjects.STREAM_RESULTS, subjects_filter=outs[0].subject)
    assert stored.state.subjects == {outs[0].subject: len(outs)}

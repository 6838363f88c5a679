"""Ingest's ends watcher on a real nats-server: which results end a request and free its
in-flight slot (an answer final, an error, the transcript final of a transcription), and
which do not (the transcript final of an ask still to be answered)."""

from __future__ import annotations

import asyncio

from nats.aio.client import Client as NATS

from mumu.contracts import headers as h
from mumu.contracts import subjects
from mumu.contracts.consumers import INGEST_QUOTA_ENDS
from mumu.contracts.events import Event, PipelineError, Segment, TranscriptFinal, new_id
from mumu.quota.gate import QuotaGate
from mumu.settings import Settings
from mumu.stages.ingest.stage import build_stage as build_ingest
from tests.harness import running

WS = "ws-ends"


def transcript(rid: str, *, answer: bool) -> TranscriptFinal:
    return TranscriptFinal(
        event_id=new_id(), request_id=rid, workspace_id=WS, session_id="s", text="hi",
        segments=[Segment(id=0, start=0.0, end=1.0, text="hi")], language="en",
        language_probability=0.9, duration=1.0, model="base", compute_seconds=0.1,
        answer=answer)


def error(rid: str, code: str) -> PipelineError:
    return PipelineError(event_id=new_id(), request_id=rid, workspace_id=WS, session_id="s",
                         stage="transcribe", code=code, message="m",
                         subject="x")


async def publish(nc: NATS, subject: str, event: Event) -> None:
    await nc.jetstream().publish(subject, event.model_dump_json().encode(),
                                 headers={h.MSG_ID: event.event_id})


async def test_the_ends_of_requests_free_their_slots_and_nothing_else_does(
    nc: NATS, streams: None, settings: Settings,
) -> None:
    gate = QuotaGate(settings.quota, None)
    gate.bind(nc.jetstream())
    rids = {name: new_id() for name in ("answering", "transcribed", "failed", "marker")}
    for rid in rids.values():
        assert await gate.admit(WS, rid) is True
    async with running(build_ingest(settings), settings):
        await publish(nc, subjects.TRANSCRIPT_FINAL.for_workspace(WS),
                      transcript(rids["answering"], answer=True))
        await publish(nc, subjects.TRANSCRIPT_FINAL.for_workspace(WS),
                      transcript(rids["transcribed"], answer=False))
        await publish(nc, subjects.ERROR.for_workspace(WS), error(rids["failed"], "no_speech"))
        # refusals hold no slot, so the watcher does not even look them up
        await publish(nc, subjects.ERROR.for_workspace(WS),
                      error(rids["answering"], "quota_exceeded"))
        await publish(nc, subjects.ERROR.for_workspace(WS), error(rids["marker"], "internal"))
        async with asyncio.timeout(10):  # until the watcher has acked all five
            while True:
                info = await nc.jetstream().consumer_info(
                    subjects.STREAM_RESULTS, INGEST_QUOTA_ENDS.durable)
                if info.num_pending == 0 and info.num_ack_pending == 0 and info.delivered \
                        and info.delivered.stream_seq >= 5:
                    break
                await asyncio.sleep(0.05)
    usage = await gate.usage()
    assert set((await usage.flow(WS)).inflight) == {rids["answering"]}

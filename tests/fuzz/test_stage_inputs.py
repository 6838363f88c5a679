"""Hypothesis-generated bad events into the stages' input subjects (reason's text asks and
transcripts; transcribe's audio-ready events, live starts and live chunks), on a real
nats-server with the real stages: no stage crashes or stalls, every bad message ends as
exactly one dead letter with a reason, and a valid message after them still flows."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS
from pydantic import BaseModel

from mumu.contracts import headers as h
from mumu.contracts import subjects
from mumu.contracts.events import AudioReady, LiveStart, TextAsk, TranscriptFinal, new_id
from mumu.runtime.stage import Stage
from mumu.settings import Settings
from mumu.stages.reason.settings import ReasonSettings
from mumu.stages.reason.stage import build_stage as build_reason
from mumu.stages.transcribe.live.settings import LiveSettings
from mumu.stages.transcribe.settings import TranscribeSettings
from mumu.stages.transcribe.stage import build_stage as build_transcribe
from tests.conftest import Ensure
from tests.fuzz.deadletters import fuzz_stage, payloads
from tests.fuzz.live_chunks import fuzz_live_chunks, start, stream_once
from tests.fuzz.strategies import invalid_events
from tests.harness import Collector, running

pytestmark = [pytest.mark.fuzz, pytest.mark.slow, pytest.mark.timeout(600)]

WS = "ws-fuzz"
IDLE = 2.0
"""A live stream's idle timeout here: a generated stream without an end ends this soon."""


def text_ask(text: str = "What is the capital of France?") -> TextAsk:
    rid = new_id()
    return TextAsk(event_id=new_id(), request_id=rid, workspace_id=WS, session_id="s-fuzz",
                   text=text)


def transcript() -> TranscriptFinal:
    return TranscriptFinal(
        event_id=new_id(), request_id=new_id(), workspace_id=WS, session_id="s-fuzz",
        text="What is the capital of France?", segments=[], language="en",
        language_probability=1.0, duration=1.0, model="base", compute_seconds=0.1)


def audio_ready() -> AudioReady:
    return AudioReady(event_id=new_id(), request_id=new_id(), workspace_id=WS,
                      session_id="s-fuzz", object_name="missing.wav", duration=1.0,
                      source_content_type="audio/wav")


def live_start() -> LiveStart:
    return start(WS, new_id())


def stage_settings(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(update={
        "reason": ReasonSettings(max_tokens=8),
        "transcribe": TranscribeSettings(model_cache_dir=tmp_path.parent / "models",
                                         cpu_threads=2, live=LiveSettings(idle_timeout=IDLE)),
    })


async def answered(nc: NATS, ask: BaseModel, subject: str) -> None:
    async with Collector(nc, subjects.ANSWER_FINAL.for_workspace(WS)) as answers:
        await nc.jetstream().publish(subject, ask.model_dump_json().encode())
        rid = ask.request_id  # type: ignore[attr-defined]
        await answers.wait_for(lambda ms: any(m.json()["request_id"] == rid for m in ms), 60)


async def run_fuzz(stage: Stage, cfg: Settings, body: Callable[[], Awaitable[None]]) -> None:
    async with running(stage, cfg) as task:
        await body()
        assert not task.done(), "the stage is still running"


async def test_bad_text_asks_and_transcripts_into_reason(
    nc: NATS, streams: None, workspaces: Ensure, settings: Settings, tmp_path: Path,
) -> None:
    await workspaces(WS)
    cfg = stage_settings(settings, tmp_path)

    async def body() -> None:
        await fuzz_stage(
            nc, "reason", subjects.INGEST_TEXT.for_workspace(WS),
            payloads(invalid_events(TextAsk, text_ask())),
            lambda: answered(nc, text_ask(), subjects.INGEST_TEXT.for_workspace(WS)))
        await fuzz_stage(
            nc, "reason", subjects.TRANSCRIPT_FINAL.for_workspace(WS),
            payloads(invalid_events(TranscriptFinal, transcript())),
            lambda: answered(nc, transcript(), subjects.TRANSCRIPT_FINAL.for_workspace(WS)))

    await run_fuzz(build_reason(cfg), cfg, body)


async def test_bad_audio_ready_events_into_transcribe(
    nc: NATS, streams: None, workspaces: Ensure, settings: Settings, tmp_path: Path,
) -> None:
    await workspaces(WS)
    cfg = stage_settings(settings, tmp_path)

    async def still_flows() -> None:
        # a well-formed event naming audio that is not there: dead-lettered as such (the
        # stage answers it, so it is neither crashed nor stalled)
        ready = audio_ready()
        async with Collector(nc, subjects.DLQ.stage("transcribe").wildcard) as letters:
            await nc.jetstream().publish(subjects.AUDIO_READY.for_workspace(WS),
                                         ready.model_dump_json().encode())
            await letters.wait_for(lambda ms: any(
                m.headers.get(h.DLQ_CODE) == "transcribe_failed" for m in ms), 30)

    async def live_still_flows() -> None:
        async with Collector(nc, subjects.DLQ.token("transcribe")) as letters:
            assert await stream_once(nc, WS, [(bytes(3200), "1", True)], letters, IDLE) == []

    async def body() -> None:
        await fuzz_stage(nc, "transcribe", subjects.AUDIO_READY.for_workspace(WS),
                         payloads(invalid_events(AudioReady, audio_ready())), still_flows)
        await fuzz_stage(nc, "transcribe", subjects.INGEST_LIVE.for_workspace(WS),
                         payloads(invalid_events(LiveStart, live_start())), live_still_flows,
                         count=25)
        outcomes = await fuzz_live_chunks(nc, WS, 15, IDLE)
        assert {"acked", "schema_violation"} <= outcomes, outcomes

    await run_fuzz(build_transcribe(cfg), cfg, body)

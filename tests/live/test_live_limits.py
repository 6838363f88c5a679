"""A live stream longer than the workspace's longest audio (the limit an upload gets) is
cut there: what was said up to the limit is final, then the stream's ``LiveEnded`` (reason
``quota_exceeded``) and an error end it. A stream left without an end and without speech
gets no final and, after the idle timeout, its ``LiveEnded`` (``stream_timeout``). A raw
producer's stream is an ask: past the workspace's requests in flight it is refused before
any work, with its ``LiveEnded`` and a ``quota_exceeded`` error."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from mumu.bench.live_driver import NatsLiveDriver
from mumu.contracts.options import AudioOptions
from mumu.quota.settings import QuotaSettings
from mumu.settings import Settings
from mumu.stages.transcribe.live.settings import LiveSettings
from mumu.stages.transcribe.settings import TranscribeSettings
from mumu.stages.transcribe.stage import build_stage
from tests.conftest import Ensure
from tests.harness import running
from tests.live.test_barge_in import play
from tests.live.test_live_nats import WS, speech_with_pauses
from tests.live.ws_live import noise

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

LONGEST = 3.0


async def test_a_stream_past_the_longest_audio_ends_there_with_a_final_and_an_error(
    nc: NATS, streams: None, workspaces: Ensure, settings: Settings, tmp_path: Path,
) -> None:
    await workspaces(WS)
    cfg = settings.model_copy(update={
        "quota": QuotaSettings(longest_audio=LONGEST, concurrent_requests=2),
        "transcribe": TranscribeSettings(model_cache_dir=tmp_path.parent / "models",
                                         cpu_threads=2, live=LiveSettings(idle_timeout=1.5))})
    events: list[tuple[str, dict[str, Any]]] = []
    ended = asyncio.Event()

    def on_event(kind: str, body: dict[str, Any], at: float) -> None:
        events.append((kind, body))
        if kind == "error" or (kind == "ended" and body["reason"] == "stream_timeout"):
            ended.set()

    driver = NatsLiveDriver(nc, WS, on_event)
    await driver.start()
    audio = speech_with_pauses("en01.wav", "en02.wav")  # about 10 s
    async with running(build_stage(cfg), cfg):
        stream = await driver.open("s-limit", AudioOptions(language="en"))
        await play(stream, audio, last=True)
        await asyncio.wait_for(ended.wait(), 90)
        await stream.send(b"\0\0" * 4000)  # a chunk after the end goes nowhere
        # a producer that sends 1 s of silence and vanishes: no final, and after the idle
        # timeout the stream's end all the same
        ended.clear()
        silent = await driver.open("s-silent", AudioOptions(language="en"))
        await play(silent, noise(1.0), last=False)
        await asyncio.wait_for(ended.wait(), 30)
        # a raw producer's stream is an ask: both streams above hold their slots in flight
        # (no ingest runs here to free them at their ends), and the workspace has 2
        refused = await driver.open("s-refused", AudioOptions(language="en"))
        async with asyncio.timeout(30):
            while not [b for k, b in events if k == "error"
                       and b["request_id"] == refused.request_id]:
                await asyncio.sleep(0.05)
    await driver.close()
    assert [(k, b["reason"], b["utterances"]) for k, b in events
            if b.get("stream_id") == silent.stream_id] == [("ended", "stream_timeout", 0)]
    refusal = [(k, b) for k, b in events if b["request_id"] == refused.request_id]
    assert [(k, b.get("reason") or b.get("code")) for k, b in refusal] == [
        ("ended", "quota_exceeded"), ("error", "quota_exceeded")]
    assert refusal[0][1]["utterances"] == 0  # refused before any work
    assert "in flight" in refusal[1][1]["message"]
    events = [(k, b) for k, b in events if b["request_id"].startswith(stream.request_id)]
    kinds = [k for k, _ in events if k in ("final", "ended", "error")]
    # the final first, then the stream's end, then the error; nothing after
    assert kinds == ["final", "ended", "error"]
    marker = next(b for k, b in events if k == "ended")
    assert (marker["stream_id"], marker["reason"], marker["utterances"], marker["seconds"]) \
        == (stream.stream_id, "quota_exceeded", 1, LONGEST)
    final = next(b for k, b in events if k == "final")
    error = next(b for k, b in events if k == "error")
    assert final["request_id"] == f"{stream.request_id}-0"
    assert final["segments"][0]["end"] <= LONGEST
    assert "quick brown" in final["text"].lower()
    assert "quarterly" not in final["text"].lower()  # said after the limit
    assert error["code"] == "quota_exceeded" and error["request_id"] == stream.request_id
    assert "longest audio" in error["message"]

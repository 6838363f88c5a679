"""OpenAI Realtime transcription sessions (``/v1/realtime?intent=transcription``) with the
official ``openai`` client's realtime connection, on real servers and the real model: server
VAD turns two spoken utterances into two items, each with deltas that add up to its
completed transcript; with ``turn_detection: null`` a commit makes one item; bad events get
OpenAI-shaped errors and the session goes on."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
from nats.aio.client import Client as NATS

from mumu.settings import Settings
from tests.gateway.conftest import Gateway, gateway_settings, serving
from tests.gateway.pipeline import pipeline_settings, stages
from tests.live.ws_live import clip, noise, two_utterances
from tests.pg_fixtures import WorkspaceFactory
from tests.text import words

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]
DELTA = "conversation.item.input_audio_transcription.delta"
COMPLETED = "conversation.item.input_audio_transcription.completed"


def at_24k(samples: np.ndarray) -> bytes:
    """16 kHz float samples as OpenAI's pcm16: 24 kHz signed 16-bit little-endian."""
    t = np.arange(int(samples.size * 1.5)) / 1.5
    up = np.interp(t, np.arange(samples.size), samples)
    return (np.clip(up, -1, 1) * 32767).astype("<i2").tobytes()


async def append(conn: Any, audio: bytes, pace: float) -> None:
    step = 4800  # 100 ms at 24 kHz
    for start in range(0, len(audio), step):
        await conn.input_audio_buffer.append(
            audio=base64.b64encode(audio[start:start + step]).decode())
        await asyncio.sleep(0.1 / pace)


async def until(conn: Any, seen: list[dict[str, Any]], done: Any, timeout: float = 90.0
                ) -> None:
    async def read() -> None:
        while not done(seen):
            seen.append((await conn.recv()).to_dict())

    try:
        await asyncio.wait_for(read(), timeout)
    except TimeoutError:
        got = [(e["type"], e.get("transcript") or e.get("delta") or e.get("error"))
               for e in seen]
        raise AssertionError(f"waited {timeout} s; got {got}") from None


def of(seen: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in seen if e["type"] == kind]


def realtime_client(gw: Gateway, api_key: str, **options: Any) -> openai.AsyncOpenAI:
    """The official client on the gateway's /v1, its Realtime websocket included."""
    return openai.AsyncOpenAI(base_url=f"{gw.url}/v1",
                              websocket_base_url="ws" + gw.url.removeprefix("http") + "/v1",
                              api_key=api_key, **options)


def transcription_session(client: openai.AsyncOpenAI) -> Any:
    """A beta Realtime connection of a transcription session (``async with`` it)."""
    return client.beta.realtime.connect(model="whisper-1",
                                        extra_query={"intent": "transcription"})


async def test_openai_realtime_transcription_session(
    nc: NATS, streams: None, settings: Settings, pg_settings: Settings,
    workspace: WorkspaceFactory, model_cache: Path,
) -> None:
    cfg = gateway_settings(pipeline_settings(settings, model_cache), wait_timeout=120.0)
    cfg = cfg.model_copy(update={"database_url": pg_settings.database_url})
    _, api_key = await workspace("realtime")
    async with stages(cfg, reason=False), serving(cfg) as gw:
        client = realtime_client(gw, api_key, max_retries=0)
        async with transcription_session(client) as conn:
            seen: list[dict[str, Any]] = []
            await until(conn, seen, lambda s: s)
            assert seen[0]["type"] == "transcription_session.created"
            assert seen[0]["session"]["turn_detection"]["type"] == "server_vad"
            # bad events: an OpenAI error each, and the session goes on
            await conn.transcription_session.update(session={"input_audio_format": "g711_ulaw"})
            await conn.send({"type": "input_audio_buffer.append", "audio": "not base64!"})
            await conn.input_audio_buffer.commit()
            await conn.send({"type": "response.create"})
            await until(conn, seen, lambda s: len(of(s, "error")) == 4)
            errors = [e["error"] for e in of(seen, "error")]
            assert [(e["type"], e["code"], e["param"]) for e in errors] == [
                ("invalid_request_error", "invalid_value", "session.input_audio_format"),
                ("invalid_request_error", "invalid_value", "audio"),
                ("invalid_request_error", "input_audio_buffer_commit_empty", None),
                ("invalid_request_error", "unknown_event", "type")]
            assert "pcm16 only" in errors[0]["message"]

            # server VAD: two utterances, a pause between, streamed at twice their pace
            await conn.transcription_session.update(session={
                "input_audio_format": "pcm16", "turn_detection": {"type": "server_vad"},
                "input_audio_transcription": {"model": "whisper-1", "language": "en"}})
            await until(conn, seen, lambda s: of(s, "transcription_session.updated"))
            assert of(seen, "transcription_session.updated")[0]["session"][
                "input_audio_transcription"]["language"] == "en"
            await append(conn, at_24k(two_utterances()), pace=2.0)
            await conn.input_audio_buffer.commit()
            await until(conn, seen, lambda s: len(of(s, COMPLETED)) == 2, 150)
            completed = of(seen, COMPLETED)
            assert words(completed[0]["transcript"])[:4] == ["the", "quick", "brown", "fox"]
            assert "quarterly" in words(completed[1]["transcript"])
            for item in completed:
                mine = [e for e in seen if e.get("item_id") == item["item_id"]]
                kinds = [e["type"] for e in mine]
                assert kinds[0] == "input_audio_buffer.speech_started", kinds
                assert kinds[-1] == COMPLETED and kinds.count(COMPLETED) == 1
                assert "input_audio_buffer.committed" in kinds
                deltas = [e["delta"] for e in mine if e["type"] == DELTA]
                assert deltas, kinds
                assert "".join(deltas) == item["transcript"]  # append only
            # some text came before that utterance's end: deltas while speaking
            first = [e["type"] for e in seen if e.get("item_id") == completed[0]["item_id"]]
            assert first.index(DELTA) < first.index("input_audio_buffer.speech_stopped")

            # no turn detection: one commit is one item, whatever its pauses
            await conn.transcription_session.update(session={"turn_detection": None})
            await until(conn, seen, lambda s: len(of(s, "transcription_session.updated")) == 2)
            audio = np.concatenate([noise(0.3), clip("en03.wav"), noise(0.3)])
            await append(conn, at_24k(audio), pace=8.0)
            await conn.input_audio_buffer.commit()
            await until(conn, seen, lambda s: len(of(s, COMPLETED)) == 3, 120)
            manual = of(seen, COMPLETED)[2]
            committed = of(seen, "input_audio_buffer.committed")[-1]
            assert committed["item_id"] == manual["item_id"]
            assert committed["previous_item_id"] == completed[1]["item_id"]
            assert words(manual["transcript"])[:3] == ["the", "weather", "today"]

        # the GA connection (no beta header): session events of the GA shape
        async with client.realtime.connect(extra_query={"intent": "transcription"}) as ga:
            seen = []
            await until(ga, seen, lambda s: s)
            assert seen[0]["type"] == "session.created"
            assert seen[0]["session"]["type"] == "transcription"
            await ga.send({"type": "session.update", "session": {
                "type": "transcription", "audio": {"input": {
                    "format": {"type": "audio/pcm", "rate": 16000}}}}})
            await ga.send({"type": "session.update", "session": {
                "type": "transcription", "audio": {"input": {
                    "transcription": {"model": "whisper-1", "language": "de"},
                    "turn_detection": None}}}})
            await until(ga, seen, lambda s: of(s, "session.updated"))
            assert of(seen, "error")[0]["error"]["param"] == "session.audio.input.format"
            audio_in = of(seen, "session.updated")[0]["session"]["audio"]["input"]
            assert audio_in["transcription"]["language"] == "de"
            assert audio_in["turn_detection"] is None

        with pytest.raises(Exception, match="401|403"):
            async with transcription_session(realtime_client(gw, "mumu_not_a_key")) as bad:
                await bad.recv()

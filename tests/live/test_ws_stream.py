"""Live speech over the websocket, end to end on real servers and the real model: a pcm16
stream played at the pace of speech gets partials while it is spoken, committed text that
only grows, one final per utterance and one answer per final; a webm (Opus) stream gets the
same words; a stream past the workspace's longest audio, and one left without an end, are
ended with a final and an error. One pipeline for the whole module's test."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
from nats.aio.client import Client as NATS

from mumu.contracts.event_types import EventType
from mumu.settings import Settings
from tests.gateway.conftest import WS_A, WS_B, gateway_settings, serving
from tests.gateway.pipeline import pipeline_settings, stages
from tests.live.ws_live import (
    SPEECH,
    Reader,
    clip,
    live_settings,
    pcm16,
    send_paced,
    two_utterances,
    words,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

PARTIAL, FINAL = EventType.TRANSCRIPT_PARTIAL, EventType.TRANSCRIPT_FINAL
ANSWER = EventType.ANSWER_FINAL
EN01 = "The quick brown fox jumps over the lazy dog."


def of_stream(messages: list[dict[str, Any]], kind: str, stream_id: str
              ) -> list[dict[str, Any]]:
    return [m for m in messages if m.get("type") == kind and m.get("stream_id") == stream_id]


def assert_committed_only_grows(partials: list[dict[str, Any]],
                                finals: list[dict[str, Any]]) -> None:
    for final in finals:
        committed = [p["committed"] or "" for p in partials if p["utterance"] == final["utterance"]]
        for earlier, later in zip(committed, committed[1:], strict=False):
            assert later.startswith(earlier), (earlier, later)
        assert final["text"].startswith(committed[-1] if committed else ""), (committed, final)


async def started(ws: aiohttp.ClientWebSocketResponse, reader: Reader,
                  **fields: Any) -> dict[str, Any]:
    before, errors = len(reader.of_type("stream.started")), len(reader.of_type("error"))
    await ws.send_json({"type": "stream.start", **fields})
    await reader.wait(lambda _: len(reader.of_type("stream.started")) > before
                      or len(reader.of_type("error")) > errors, timeout=20)
    assert len(reader.of_type("error")) == errors, reader.of_type("error")
    return reader.of_type("stream.started")[-1]


async def test_websocket_live_streams_end_to_end(
    nc: NATS, streams: None, settings: Settings, tmp_path: Path,
) -> None:
    cfg = live_settings(gateway_settings(
        pipeline_settings(settings, tmp_path.parent / "models"), wait_timeout=120.0))
    # a second gateway on the same pipeline: a short longest audio and idle timeout
    short = live_settings(cfg, stream_idle_timeout=1.5).model_copy(update={
        "quota": cfg.quota.model_copy(update={"longest_audio": 2.0})})
    async with stages(cfg), serving(cfg) as gw, serving(short) as gw_short, \
            aiohttp.ClientSession() as http:
        async with http.ws_connect(gw.ws_url(gw.token(WS_A, "live"))) as ws, \
                Reader(ws) as reader:
            await reader.wait(lambda _: reader.of_type("ready"))
            # 1. pcm16 at the pace of speech: two utterances separated by a pause
            s = await started(ws, reader, format="pcm16", language="en", sample_rate=16000)
            sid, rid = s["stream_id"], s["request_id"]
            await send_paced(ws, pcm16(two_utterances()))
            partials_before_end = of_stream(reader.messages, PARTIAL, sid)
            await ws.send_json({"type": "stream.end"})
            await reader.wait(lambda ms: len([m for m in ms if m.get("type") == ANSWER and
                                              m["request_id"].startswith(rid)]) >= 2, 120)
            await reader.wait(lambda _: reader.of_type("stream.ended"))
            finals = of_stream(reader.messages, FINAL, sid)
            answers = [m for m in reader.of_type(ANSWER) if m["request_id"].startswith(rid)]
            assert partials_before_end, "no partial before stream.end"
            assert [f["utterance"] for f in finals] == [0, 1]
            assert [f["request_id"] for f in finals] == [f"{rid}-0", f"{rid}-1"]
            assert words(finals[0]["text"])[:4] == ["the", "quick", "brown", "fox"]
            assert "quarterly" in words(finals[1]["text"])
            assert sorted(a["request_id"] for a in answers) == [f"{rid}-0", f"{rid}-1"]
            assert_committed_only_grows(of_stream(reader.messages, PARTIAL, sid), finals)
            ended = reader.of_type("stream.ended")[-1]  # the stage's, after the last final
            assert (ended["stream_id"], ended["reason"], ended["utterances"]) == (sid, "end", 2)
            assert ended["cursor"] > max(f["cursor"] for f in finals)

            # 2. webm (Opus, as a MediaRecorder makes it), sent at once, no answer wanted;
            # en01.webm is en01.wav between 0.5 s of noise, 32 kbit/s Opus in live WebM
            # (PyAV's matroska muxer with live=1: no sizes, no cues, as a recorder streams)
            s = await started(ws, reader, format="webm", language="en", answer=False)
            webm = (SPEECH / "en01.webm").read_bytes()
            for start in range(0, len(webm), 1000):
                await ws.send_bytes(webm[start:start + 1000])
            await ws.send_json({"type": "stream.end"})
            await reader.wait(lambda ms: of_stream(ms, FINAL, s["stream_id"]), 60)
            webm_final = of_stream(reader.messages, FINAL, s["stream_id"])
            assert [f["utterance"] for f in webm_final] == [0]
            heard, said = words(webm_final[0]["text"]), words(EN01)
            assert len(heard) == len(said) and sum(map(str.__eq__, heard, said)) >= len(said) - 1

            assert not [m for m in reader.messages if m.get("type") == "error"]

        # 3. past the longest audio (2 s here): ended there, a final and a clear error
        async with http.ws_connect(gw_short.ws_url(gw_short.token(WS_B, "short"))) as ws, \
                Reader(ws) as reader:
            await reader.wait(lambda _: reader.of_type("ready"))
            s = await started(ws, reader, format="pcm16", language="en")
            audio = pcm16(clip("en01.wav"))
            for start in range(0, len(audio), 8000):
                await ws.send_bytes(audio[start:start + 8000])
            await reader.wait(lambda ms: of_stream(ms, FINAL, s["stream_id"]), 60)
            errors = reader.of_type("error")
            assert [e["code"] for e in errors] == ["too_long"], errors
            assert "longest audio (2 s)" in errors[0]["message"]
            # the gateway ended it (the error says why): the stage's stream.ended follows
            await reader.wait(lambda _: reader.of_type("stream.ended"), 30)
            ended = reader.of_type("stream.ended")
            assert [(e["stream_id"], e["reason"], e["seconds"]) for e in ended] == [
                (s["stream_id"], "end", 2.0)]
            final = of_stream(reader.messages, FINAL, s["stream_id"])
            assert words(final[0]["text"])[:2] == ["the", "quick"]
            # the client's own stream.end after that is taken quietly; the socket goes on
            await ws.send_json({"type": "stream.end"})

            # 4. no end and no audio for the idle timeout (1.5 s): ended, final, error
            s = await started(ws, reader, format="pcm16", language="en")
            await ws.send_bytes(audio[:int(1.6 * 32000)])
            await reader.wait(lambda ms: of_stream(ms, FINAL, s["stream_id"]), 60)
            errors = reader.of_type("error")
            assert [e["code"] for e in errors] == ["too_long", "stream_timeout"], errors
            await reader.wait(lambda _: len(reader.of_type("stream.ended")) == 2, 30)
            assert [e["stream_id"] for e in reader.of_type("stream.ended")][1] == s["stream_id"]
            assert "quick" in words(of_stream(reader.messages, FINAL, s["stream_id"])[0]["text"])
            await ws.send_json({"type": "ping"})
            await reader.wait(lambda _: reader.of_type("pong"))

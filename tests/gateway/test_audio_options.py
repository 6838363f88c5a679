"""Audio options from every client surface reach the ingest headers, through one model.

The multipart form of ``/api/ask``, the websocket's ``audio.end`` and OpenAI's form are
read into ``AudioOptions`` and written with ``IngestAudioHeaders.to_headers()``; a
producer's headers are what ingest reads back (``tests/contracts/test_options.py``).
"""

from __future__ import annotations

import asyncio

import aiohttp
from nats.aio.client import Client as NATS

from mumu.contracts import headers as h
from mumu.contracts.options import AudioOptions
from mumu.settings import Settings
from mumu.stages.ingest.request import parse_headers
from tests.gateway.conftest import (
    WS_A,
    Gateway,
    Results,
    gateway_settings,
    receive_until,
    serving,
)
from tests.gateway.test_http import SPEECH, auth
from tests.harness import Collector
from tests.pg_fixtures import WorkspaceFactory

EVERY = AudioOptions(language="de", task="translate", prompt="Kathryn Nguyen",
                     word_timestamps=True, vad=True, beam_size=3, answer=False)
FIELDS = {"language": "de", "task": "translate", "prompt": "Kathryn\n Nguyen",
          "word_timestamps": "true", "vad": "on", "beam_size": "3", "answer": "false"}
"""``EVERY`` as a client sends it (strings, a prompt over two lines)."""
CLIP = (SPEECH / "en01.wav").read_bytes()


def form(**fields: str) -> aiohttp.FormData:
    data = aiohttp.FormData()
    data.add_field("audio", CLIP, filename="q.wav", content_type="audio/wav")
    for name, value in fields.items():
        data.add_field(name, value)
    return data


async def test_every_form_option_of_an_audio_ask_becomes_its_ingest_header(
    gateway: Gateway, http: aiohttp.ClientSession, nc: NATS
) -> None:
    token = gateway.token(WS_A, "s1")
    async with Collector(nc, "mumu.ingest.audio.>") as seen:
        async with http.post(f"{gateway.url}/api/ask", data=form(**FIELDS),
                             headers=auth(token)) as resp:
            assert resp.status == 202, await resp.text()
            request_id = (await resp.json())["request_id"]
        async with http.post(f"{gateway.url}/api/ask", data=form(),
                             headers=auth(token)) as resp:
            assert resp.status == 202, await resp.text()
        published = await seen.wait_count("mumu.ingest.audio.", 2)
    by_id = {m.headers[h.REQUEST_ID]: m.headers for m in published}
    every = by_id.pop(request_id)
    assert every[h.PROMPT] == "Kathryn Nguyen"
    assert parse_headers(every).options() == EVERY
    (defaults,) = by_id.values()
    assert parse_headers(defaults).options() == AudioOptions()
    assert h.LANGUAGE not in defaults and h.PROMPT not in defaults


async def test_bad_form_options_are_400s_naming_the_field(
    gateway: Gateway, http: aiohttp.ClientSession, nc: NATS
) -> None:
    token = gateway.token(WS_A, "s1")
    cases = {"beam_size": "99", "task": "summarise", "language": "English", "vad": "perhaps"}
    async with Collector(nc, "mumu.ingest.>") as seen:
        for name, value in cases.items():
            async with http.post(f"{gateway.url}/api/ask", data=form(**{name: value}),
                                 headers=auth(token)) as resp:
                body = await resp.json()
            assert resp.status == 400, body
            assert body["error"]["code"] == "bad_request"
            assert body["error"]["message"].startswith(f"{name}: "), body
    assert seen.messages == []  # nothing was published


async def test_audio_end_options_on_the_websocket_become_ingest_headers(
    gateway: Gateway, http: aiohttp.ClientSession, nc: NATS
) -> None:
    async with (Collector(nc, "mumu.ingest.audio.>") as seen,
                http.ws_connect(gateway.ws_url(gateway.token(WS_A, "s1"))) as ws):
        await receive_until(ws, lambda m: m["type"] == "ready")
        await ws.send_bytes(CLIP)
        await ws.send_json({"type": "audio.end", "format": "wav", "beam_size": 99})
        bad = await receive_until(ws, lambda m: m["type"] == "error")
        await ws.send_bytes(CLIP)
        await ws.send_json({"type": "audio.end", "format": "wav", **EVERY.model_dump()})
        accepted = (await receive_until(ws, lambda m: m["type"] == "accepted"))[-1]
        (published,) = await seen.wait_count("mumu.ingest.audio.", 1)
    assert (bad[-1]["code"], bad[-1]["message"].split(":")[0]) == ("bad_message", "beam_size")
    assert published.headers[h.REQUEST_ID] == accepted["request_id"]
    assert published.data == CLIP
    assert parse_headers(published.headers).options() == EVERY


async def test_openai_form_options_become_ingest_headers(
    nc: NATS, streams: None, settings: Settings, pg_settings: Settings,
    workspace: WorkspaceFactory, http: aiohttp.ClientSession,
) -> None:
    cfg = gateway_settings(settings, wait_timeout=1.0)
    cfg = cfg.model_copy(update={"database_url": pg_settings.database_url})
    _, api_key = await workspace("options")
    data = aiohttp.FormData()
    data.add_field("file", CLIP, filename="q.wav")
    for name, value in (("model", "whisper-1"), ("language", "de"), ("prompt", "Kathryn"),
                        ("response_format", "verbose_json"),
                        ("timestamp_granularities[]", "word"),
                        ("timestamp_granularities[]", "segment")):
        data.add_field(name, value)
    async with serving(cfg) as gw, Collector(nc, "mumu.ingest.audio.>") as seen:
        async with http.post(f"{gw.url}/v1/audio/transcriptions", data=data,
                             headers=auth(api_key)) as resp:
            assert resp.status == 504  # no ingest stage runs here: the ask was published
        (published,) = await seen.wait_count("mumu.ingest.audio.", 1)
    assert parse_headers(published.headers).options() == AudioOptions(
        language="de", prompt="Kathryn", word_timestamps=True, answer=False)


async def test_a_transcribe_only_ask_waits_for_the_transcript_not_an_answer(
    gateway: Gateway, http: aiohttp.ClientSession, nc: NATS, results: Results
) -> None:
    token = gateway.token(WS_A, "s1")

    async def ask() -> tuple[int, dict[str, object]]:
        async with http.post(f"{gateway.url}/api/ask?wait=true", data=form(answer="false"),
                             headers=auth(token)) as resp:
            return resp.status, await resp.json()

    async with Collector(nc, "mumu.ingest.audio.>") as seen:
        asking = asyncio.create_task(ask())
        (published,) = await seen.wait_count("mumu.ingest.audio.", 1)
        request_id = published.headers[h.REQUEST_ID]
        await results.transcript(WS_A, "s1", request_id, "What is the capital of France?")
        status, body = await asking  # no answer will come: the stage was told not to
    assert status == 200, body
    assert (body["request_id"], body["transcript"], body["answer"]) == (
        request_id, "What is the capital of France?", None)

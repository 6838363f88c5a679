"""The gateway path of the audio whitelist: playlists and lists (HLS, concat) at a local
file or a loopback URL get 415 over HTTP and ``unsupported_audio`` on the websocket,
are never published, and nothing is opened; what passes the sniff is refused by ingest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
from nats.aio.client import Client as NATS

from mumu.contracts.events import PipelineError
from mumu.settings import Settings
from mumu.stages.ingest.stage import build_stage as build_ingest
from tests.gateway.conftest import WS_A, Gateway, gateway_settings, receive_until, serving
from tests.harness import Collector, running
from tests.hostile_audio import riff, traps
from tests.pg_fixtures import WorkspaceFactory

MESSAGE = (
    "not a supported audio file: send wav, flac, ogg/opus, mp3, webm/matroska, mp4/m4a"
)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def post_audio(
    http: aiohttp.ClientSession, gateway: Gateway, data: bytes
) -> tuple[int, Any]:
    form = aiohttp.FormData()
    form.add_field("audio", data, filename="question.wav", content_type="audio/wav")
    async with http.post(f"{gateway.url}/api/ask", data=form,
                         headers=auth(gateway.token(WS_A, "s1"))) as resp:
        return resp.status, await resp.json()


async def test_playlists_are_refused_by_the_gateway_without_opening_anything(
    gateway: Gateway, http: aiohttp.ClientSession, nc: NATS, settings: Settings,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    trap_dir = tmp_path / "traps"
    trap_dir.mkdir()
    monkeypatch.chdir(trap_dir)  # where concat would resolve a relative name
    with traps(trap_dir) as t:
        attacks = t.payloads()
        disguised = {name: riff(attacks[name]) for name in ("concat_relative", "hls_loopback")}
        async with running(build_ingest(settings), settings), Collector(nc) as seen:
            for name, data in attacks.items():
                status, body = await post_audio(http, gateway, data)
                assert status == 415, (name, body)
                error = body["error"]
                assert (error["code"], error["message"]) == ("unsupported_audio", MESSAGE), name
            async with http.ws_connect(gateway.ws_url(gateway.token(WS_A, "s1"))) as ws:
                await receive_until(ws, lambda m: m["type"] == "ready")
                for name, data in attacks.items():
                    await ws.send_bytes(data)
                    await ws.send_json({"type": "audio.end", "format": "wav"})
                    error = (await receive_until(ws, lambda m: m["type"] == "error"))[-1]
                    assert error["code"] == "unsupported_audio", name
            assert not seen.on("mumu.ingest.audio.")
            # a wav header in front passes the sniff: ingest's wav demuxer refuses it
            accepted = {}
            for name, data in disguised.items():
                status, body = await post_audio(http, gateway, data)
                assert status == 202, (name, body)
                accepted[body["request_id"]] = name
            errors = await seen.wait_count("mumu.error.", len(disguised), timeout=30)
    assert t.quiet(), (t.opened, t.connections)
    got = {e.request_id: e.code for e in map(PipelineError.model_validate_json,
                                              (m.data for m in errors))}
    assert got == dict.fromkeys(accepted, "unsupported_audio")


async def test_the_openai_route_refuses_playlists_without_opening_anything(
    nc: NATS, streams: None, settings: Settings, pg_settings: Settings,
    workspace: WorkspaceFactory, http: aiohttp.ClientSession, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = gateway_settings(settings).model_copy(
        update={"database_url": pg_settings.database_url})
    _, api_key = await workspace("whitelist")
    trap_dir = tmp_path / "traps"
    trap_dir.mkdir()
    monkeypatch.chdir(trap_dir)
    with traps(trap_dir) as t:
        async with serving(cfg) as gw, Collector(nc, "mumu.ingest.>") as seen:
            for name, data in t.payloads().items():
                form = aiohttp.FormData()
                form.add_field("model", "whisper-1")
                form.add_field("file", data, filename="question.wav", content_type="audio/wav")
                async with http.post(f"{gw.url}/v1/audio/transcriptions", data=form,
                                     headers=auth(api_key)) as resp:
                    body = await resp.json()
                assert resp.status == 415, (name, body)
                assert body["error"]["code"] == "unsupported_audio", name
            assert not seen.on("mumu.ingest.")
    assert t.quiet(), (t.opened, t.connections)

"""HTTP routes without a database: probes, OpenAPI, asks, limits and their JSON errors."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import subprocess
import sys
import wave
from pathlib import Path

import aiohttp
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy, ConsumerConfig

from mumu.broker.workspaces import ensure_workspace
from mumu.contracts import headers as h
from mumu.contracts import subjects
from mumu.contracts.events import TextAsk
from mumu.gateway import models, openapi
from mumu.gateway.app import create_app
from mumu.gateway.models import TextAskBody
from mumu.gateway.openapi import OPERATIONS, openapi_text
from mumu.settings import Settings
from mumu.stages.registry import STAGES
from tests.gateway.conftest import WS_A, Gateway, gateway_settings, provision, serving
from tests.harness import Collector

ROOT = Path(__file__).resolve().parents[2]
SPEECH = ROOT / "tests" / "data" / "speech"


def wav(seconds: float, rate: int = 16_000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\0\0" * int(seconds * rate))
    return buf.getvalue()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_health_ready_metrics_and_openapi(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{gateway.url}/api/health") as resp:
        body = await resp.json()
    assert resp.status == 200
    assert set(body) == {"status", "version", "uptime", "hostname"}
    assert body["status"] == "ok"
    assert isinstance(body["uptime"], float)
    async with http.get(f"{gateway.url}/api/ready") as resp:
        ready = await resp.json()
    assert resp.status == 503  # no database configured and no stage ran in this test
    assert any("MUMU_DATABASE_URL" in r for r in ready["reasons"])
    missing = [r.split()[1] for r in ready["reasons"] if r.startswith("consumer ")]
    assert missing == [c.durable for c in STAGES.consumers()]
    async with http.get(f"{gateway.url}/metrics") as resp:
        assert "mumu_gateway_requests" in await resp.text()
    async with http.get(f"{gateway.url}/api/openapi.json") as resp:
        served = await resp.json()
    checked_in = json.loads((ROOT / "schemas" / "openapi.json").read_text())
    assert served == checked_in
    assert (ROOT / "schemas" / "openapi.json").read_text() == openapi_text(), (
        "schemas/openapi.json drifted: run `mumu gateway --openapi > schemas/openapi.json`"
    )


def test_every_served_route_is_documented_and_every_documented_one_served(
    settings: Settings,
) -> None:
    app = create_app(gateway_settings(settings))
    served = {
        (route.method, route.resource.canonical) for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
        and not route.resource.canonical.startswith("/static")
    }
    documented = {(op.method.upper(), op.path) for op in OPERATIONS}
    # the websockets are described in docs/gateway.md and docs/audio.md: OpenAPI cannot
    assert served - {("GET", "/api/ws"), ("GET", "/v1/realtime")} == documented


def test_openapi_drift_is_detected() -> None:
    checked_in = (ROOT / "schemas" / "openapi.json").read_text()
    assert checked_in == openapi_text()

    class Stricter(TextAskBody):
        priority: int = 0

    op = next(o for o in OPERATIONS if o.operation_id == "ask")
    changed = dataclasses.replace(op, body={**op.body, "application/json": Stricter})
    swapped = tuple(changed if o is op else o for o in OPERATIONS)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(openapi, "OPERATIONS", swapped)
        patch.setattr(models, "MODELS", (*models.MODELS, Stricter))
        assert openapi_text() != checked_in


def test_a_gateway_without_a_session_secret_refuses_to_start(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "MUMU_NATS__URL": "nats://127.0.0.1:1",
           "MUMU_DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "mumu", "gateway"], env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )
    assert done.returncode == 1
    assert "MUMU_GATEWAY__SESSION_SECRET" in done.stderr


async def test_text_and_audio_asks_are_published(
    gateway: Gateway, http: aiohttp.ClientSession, nc: NATS
) -> None:
    token = gateway.token(WS_A, "s1")
    clip = (SPEECH / "en01.wav").read_bytes()
    big = wav(40.0)  # 1.28 MB: over the 1 MiB payload limit, goes through the Object Store
    async with Collector(nc, "mumu.ingest.>") as seen:
        async with http.post(f"{gateway.url}/api/ask", json={"text": "Hello?"},
                             headers=auth(token)) as resp:
            assert resp.status == 202
            text_ids = await resp.json()
        form = aiohttp.FormData()
        form.add_field("audio", clip, filename="q.wav", content_type="audio/wav")
        form.add_field("language", "en")
        async with http.post(f"{gateway.url}/api/ask", data=form, headers=auth(token)) as resp:
            assert resp.status == 202
            audio_ids = await resp.json()
        form = aiohttp.FormData()
        form.add_field("audio", big, filename="long.wav")
        async with http.post(f"{gateway.url}/api/ask", data=form, headers=auth(token)) as resp:
            assert resp.status == 202
            big_ids = await resp.json()
        await seen.wait_count("mumu.ingest.audio.", 2)
        await seen.wait_count("mumu.ingest.text.", 1)
    ask = TextAsk.model_validate_json(seen.on("mumu.ingest.text.")[0].data)
    assert (ask.request_id, ask.session_id) == (text_ids["request_id"], "s1")
    assert ask.workspace_id == WS_A
    small, large = sorted(seen.on("mumu.ingest.audio."), key=lambda m: len(m.data), reverse=True)
    assert small.subject == f"mumu.ingest.audio.{WS_A}"
    assert small.data == clip
    assert small.headers[h.REQUEST_ID] == audio_ids["request_id"]
    assert small.headers[h.SESSION] == "s1"
    assert small.headers[h.CONTENT_TYPE] == "audio/wav"
    assert small.headers[h.LANGUAGE] == "en"
    assert large.data == b""
    assert large.headers[h.REQUEST_ID] == big_ids["request_id"]
    # the workspace's own upload bucket, not the service bucket of normalised audio
    store = await nc.jetstream().object_store(subjects.upload_bucket(WS_A))
    assert (await store.get(large.headers[h.AUDIO_OBJECT])).data == big


async def test_errors_are_json_with_the_right_status(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    token = gateway.token(WS_A, "s1")
    url = f"{gateway.url}/api/ask"
    form = aiohttp.FormData()
    form.add_field("audio", b"GIF89a not audio at all", filename="x.wav")
    cases = [
        ({"json": {"text": "hi"}}, 401, "unauthorized"),
        ({"json": {"text": "hi"}, "headers": auth("nope.nope")}, 401, "invalid_token"),
        ({"data": b"{", "headers": {**auth(token), "Content-Type": "application/json"}}, 400,
         "bad_request"),
        ({"json": {"text": ""}, "headers": auth(token)}, 400, "bad_request"),
        ({"data": b"hi", "headers": {**auth(token), "Content-Type": "text/plain"}}, 415,
         "unsupported_media_type"),
        ({"data": form, "headers": auth(token)}, 415, "unsupported_audio"),
    ]
    for kwargs, status, code in cases:
        async with http.post(url, **kwargs) as resp:  # type: ignore[arg-type]
            body = await resp.json()
        assert (resp.status, body["error"]["code"]) == (status, code), (kwargs, body)
        assert body["error"]["message"]
    # a request that does not fit its model: a 400 naming the field
    precise = [
        ("", {"text": "hi", "language": 5}, "language: Input should be a valid string"),
        ("", {"text": "  "}, "text: must not be blank"),
        ("", {"text": "hi", "txet": "typo"}, "txet: Extra inputs are not permitted"),
        ("", {}, "text: Field required"),
        ("?wait=maybe", {"text": "hi"}, "wait: Input should be a valid boolean"),
    ]
    for query, body, message in precise:
        async with http.post(url + query, json=body, headers=auth(token)) as resp:
            got = await resp.json()
        assert (resp.status, got["error"]["code"]) == (400, "bad_request"), got
        assert got["error"]["message"].startswith(message), got
    async with http.get(f"{gateway.url}/nowhere") as resp:
        assert resp.status == 404
        assert (await resp.json())["error"]["code"] == "not_found"
    async with http.get(f"{gateway.url}/api/sessions/other/history", headers=auth(token)) as resp:
        assert resp.status == 403


async def test_body_limit_rate_limit_and_backpressure(
    nc: NATS, streams: None, settings: Settings, http: aiohttp.ClientSession
) -> None:
    cfg = gateway_settings(
        settings, max_body_bytes=64 * 1024, rate_limit_burst=3, rate_limit_per_second=0.5,
        lag_threshold=5, lag_check_interval=0.1,
    )
    await provision(cfg, "33333333-3333-4333-8333-333333333333")  # the "other" workspace
    async with serving(cfg) as gw:
        token = gw.token(WS_A, "s1")
        url = f"{gw.url}/api/ask"
        form = aiohttp.FormData()
        form.add_field("audio", wav(3.0), filename="big.wav")
        async with http.post(url, data=form, headers=auth(token)) as resp:
            assert resp.status == 413
            assert (await resp.json())["error"]["code"] == "too_large"
        statuses = []
        for _ in range(4):
            async with http.post(url, json={"text": "hi"}, headers=auth(token)) as resp:
                statuses.append(resp.status)
                retry_after = resp.headers.get("Retry-After")
                body = await resp.json()
        assert statuses == [202, 202, 202, 429]
        assert body["error"]["code"] == "rate_limited"
        assert retry_after is not None
        assert int(retry_after) >= 1
        # a stage that does not keep up: its durable consumer lags past the threshold
        js = nc.jetstream()
        await js.add_consumer(subjects.STREAM_INGEST, ConsumerConfig(
            durable_name="stuck-stage", ack_policy=AckPolicy.EXPLICIT,
            filter_subject=subjects.INGEST_TEXT.wildcard))
        await ensure_workspace(nc, "ws-load")
        for n in range(6):
            await js.publish(subjects.INGEST_TEXT.for_workspace("ws-load"), b"{}",
                             headers={h.MSG_ID: f"load-{n}"})
        other = gw.token("33333333-3333-4333-8333-333333333333", "s1")
        for _ in range(50):
            async with http.post(url, json={"text": "hi"}, headers=auth(other)) as resp:
                if resp.status == 503:
                    body = await resp.json()
                    break
            await asyncio.sleep(0.1)
        assert resp.status == 503
        assert body["error"]["code"] == "overloaded"
        assert "stuck-stage" in body["error"]["message"]


async def test_wait_names_the_stage_that_did_not_answer(
    nc: NATS, streams: None, settings: Settings, http: aiohttp.ClientSession
) -> None:
    async with serving(gateway_settings(settings, wait_timeout=1.0)) as gw:
        token = gw.token(WS_A, "s1")
        async with http.post(f"{gw.url}/api/ask?wait=true", json={"text": "hi"},
                             headers=auth(token)) as resp:
            body = await resp.json()
        assert resp.status == 504
        assert "reason stage did not answer" in body["error"]["message"]
        form = aiohttp.FormData()
        form.add_field("audio", (SPEECH / "en01.wav").read_bytes(), filename="q.wav")
        async with http.post(f"{gw.url}/api/ask?wait=true", data=form,
                             headers=auth(token)) as resp:
            body = await resp.json()
        assert resp.status == 504
        assert "ingest stage did not answer" in body["error"]["message"]


async def test_a_full_request_stream_is_503_overloaded_and_nothing_is_evicted(
    gateway: Gateway, http: aiohttp.ClientSession, nc: NATS, workspaces
) -> None:
    await workspaces(WS_A)  # the workspace's intake stream is the one that fills up
    js = nc.jetstream()
    intake = subjects.intake_stream(WS_A)
    info = await js.stream_info(intake)
    config = info.config
    config.max_msgs = info.state.messages + 1
    await js.update_stream(config)
    token = gateway.token(WS_A, "s1")
    statuses = []
    for text in ("first", "second"):
        async with http.post(f"{gateway.url}/api/ask", json={"text": text},
                             headers=auth(token)) as resp:
            statuses.append((resp.status, await resp.json(), resp.headers.get("Retry-After")))
    assert statuses[0][0] == 202
    status, body, retry_after = statuses[1]
    assert status == 503 and body["error"]["code"] == "overloaded", body
    assert retry_after == "5"
    state = (await js.stream_info(intake)).state
    assert state.messages == info.state.messages + 1  # the accepted ask is still there

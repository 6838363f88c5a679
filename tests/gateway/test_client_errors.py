"""Faults in the LLM backend and the database: the client gets a code, a message meant for
it and the request id, never the internal detail (HTTP body, websocket frame,
``mumu.error.<ws>`` event); the operators find that detail in the log or the dead letter,
and no log line carries a password. Real NATS, PostgreSQL, reason and persist stages."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from nats.aio.client import Client as NATS

from mumu.contracts.events import PipelineError
from mumu.runtime.client_errors import FIXED
from mumu.runtime.http import serve
from mumu.settings import Settings
from mumu.stages.persist.stage import build_stage as build_persist
from mumu.stages.reason.stage import build_stage as build_reason
from tests.gateway.conftest import Results, gateway_settings, receive_until, rid, serving
from tests.gateway.test_tenancy import auth, session
from tests.harness import Collector, running
from tests.pg_fixtures import WorkspaceFactory
from tests.reason.conftest import reason_settings

MARKER = "INTERNAL-MARKER-7f3a"
"""In every error the backend gives, and in the path of its URL."""
PASSWORD = "backend-pw-91c2"  # noqa: S105 - a test value that must never show
DB_PASSWORD = "db-pw-55e1"  # noqa: S105


def quick(settings: Settings) -> Settings:
    """Two deliveries, a short backoff: a failing request is dead-lettered in a second."""
    return settings.model_copy(update={"stage": settings.stage.model_copy(update={
        "max_deliver": 2, "backoff": [0.1]})})


@contextlib.asynccontextmanager
async def failing_backend() -> AsyncIterator[str]:
    """An OpenAI-compatible URL (with a password) whose server fails every call, naming
    internals in its error text."""

    async def fail(request: web.Request) -> web.Response:
        return web.json_response({"error": {"message": f"{MARKER}: model shard /srv/llm/3 "
                                            "failed on gpu-node-7.internal"}}, status=500)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fail)
    runner, port = await serve(app, "127.0.0.1", 0)
    try:
        yield f"http://llm:{PASSWORD}@127.0.0.1:{port}/{MARKER}/v1"
    finally:
        await runner.cleanup()


def shows_nothing_internal(text: str) -> None:
    for internal in (MARKER, PASSWORD, DB_PASSWORD, "127.0.0.1", "gpu-node", "/srv/",
                     "permission denied", "asyncpg", "Traceback"):
        assert internal not in text, f"{internal!r} reached the client: {text}"


def log_text(caplog: pytest.LogCaptureFixture) -> str:
    handler = logging.StreamHandler()
    return "\n".join(
        record.getMessage() + (handler.format(record) if record.exc_info else "")
        for record in caplog.records)


async def test_a_failing_llm_backend_reaches_clients_as_code_message_and_request_id(
    nc: NATS, streams: None, settings: Settings, results: Results,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with failing_backend() as url:
        cfg = quick(gateway_settings(reason_settings(settings, url), wait_timeout=20.0))
        async with serving(cfg) as gw, running(build_reason(cfg), cfg), Collector(
            nc, "mumu.>"
        ) as seen, aiohttp.ClientSession() as http:
            token = gw.token()
            async with http.post(f"{gw.url}/api/ask?wait=true", json={"text": "hello?"},
                                 headers=auth(token)) as resp:
                text = await resp.text()
                status, header_rid = resp.status, resp.headers.get("X-Request-Id")
            async with http.ws_connect(gw.ws_url(token)) as sock:
                await receive_until(sock, lambda m: m["type"] == "ready")
                await sock.send_json({"type": "ask", "text": "and now?"})
                accepted = (await receive_until(sock, lambda m: m["type"] == "accepted"))[-1]
                frames = await receive_until(
                    sock, lambda m: m["type"] == "error" and m.get("stage") == "reason",
                    timeout=20)
            errors = await seen.wait_count("mumu.error.", 2, timeout=20)
            letters = await seen.wait_count("mumu.dlq.reason", 2, timeout=20)

    # HTTP: a code, a message meant for the client, the ask's request id
    assert status == 503, text
    body = json.loads(text)["error"]
    shows_nothing_internal(text)
    assert body["code"] == "reason_unavailable"
    assert body["message"] == f"reason: {FIXED['reason_unavailable']}"
    asked = {PipelineError.model_validate_json(m.data).request_id for m in errors}
    assert body["request_id"] == header_rid
    assert body["request_id"] in asked

    # websocket: the error frame of the ask it accepted
    error = frames[-1]
    shows_nothing_internal(json.dumps(frames))
    assert (error["code"], error["request_id"]) == ("reason_unavailable", accepted["request_id"])
    assert error["message"] == FIXED["reason_unavailable"]

    # the events on mumu.error.<ws> (raw NATS clients read them too)
    for m in errors:
        shows_nothing_internal(m.data.decode())
    # the operators' copies keep the detail: the fault was real and it carried the marker
    assert all(MARKER in m.headers["Mumu-Dlq-Reason"] for m in letters)
    assert all(PASSWORD not in m.headers["Mumu-Dlq-Reason"] for m in letters)
    logged = log_text(caplog)
    assert MARKER in logged
    assert PASSWORD not in logged


async def test_database_faults_reach_clients_without_database_detail(
    nc: NATS, streams: None, settings: Settings, pg_settings: Settings,
    admin_conn: asyncpg.Connection, workspace: WorkspaceFactory, results: Results,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    cfg = quick(gateway_settings(settings).model_copy(update={
        "database_url": pg_settings.database_url, "master_keys": pg_settings.master_keys}))
    ws, key = await workspace("faulty")
    async with serving(cfg) as gw, running(build_persist(cfg), cfg), Collector(
        nc, "mumu.>"
    ) as seen, aiohttp.ClientSession() as http:
        made = await session(http, gw.url, key)
        sid, token = made["session_id"], made["token"]
        # the application role loses its rights on the stored rows (a bad migration, a
        # revoked grant): history reads and persist writes fail in the database
        await admin_conn.execute("REVOKE SELECT, INSERT ON mumu.transcripts, mumu.answers "
                                 "FROM mumu_app")
        async with http.get(f"{gw.url}/api/sessions/{sid}/history",
                            headers=auth(token)) as resp:
            text, status = await resp.text(), resp.status
        answered = rid()
        await results.final(ws, sid, answered, "an answer persist cannot store")
        errors = await seen.wait_count(f"mumu.error.{ws}", 1, timeout=20)
        letters = await seen.wait_count("mumu.dlq.persist", 1, timeout=20)

    assert status == 500, text
    shows_nothing_internal(text)
    body = json.loads(text)["error"]
    assert body["code"] == "internal"
    logged = [r for r in caplog.records if getattr(r, "request_id", None) == body["request_id"]]
    assert logged, "the 500 is logged under the request id the client got"
    assert logged[0].exc_info is not None
    assert "permission denied" in str(logged[0].exc_info[1])

    error = PipelineError.model_validate_json(errors[0].data)
    shows_nothing_internal(errors[0].data.decode())
    assert (error.code, error.request_id) == ("persist_failed", answered)
    assert error.message == FIXED["persist_failed"]
    assert "permission denied" in letters[0].headers["Mumu-Dlq-Reason"]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_an_unreachable_database_is_503_without_its_address_or_password(
    nc: NATS, streams: None, settings: Settings, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    port = closed_port()
    url = f"postgresql://mumu_app:{DB_PASSWORD}@127.0.0.1:{port}/mumu"
    cfg = gateway_settings(settings).model_copy(update={"database_url": url})
    async with serving(cfg) as gw, aiohttp.ClientSession() as http:
        answers: list[tuple[int, str]] = []
        async with http.post(f"{gw.url}/api/session", headers=auth("mumu_" + "k" * 43)) as resp:
            answers.append((resp.status, await resp.text()))
        token = gw.token(key_id="00000000-0000-4000-8000-000000000001")
        async with http.post(f"{gw.url}/api/ask", json={"text": "hi"},
                             headers=auth(token)) as resp:
            answers.append((resp.status, await resp.text()))
        async with http.get(f"{gw.url}/api/ready") as resp:
            ready: dict[str, Any] = await resp.json()
    for status, text in answers:
        assert status == 503, text
        shows_nothing_internal(text)
        assert str(port) not in text
        assert json.loads(text)["error"]["request_id"]
    assert "database: not reachable (the gateway's log says why)" in ready["reasons"]
    shows_nothing_internal(json.dumps(ready))
    assert str(port) not in json.dumps(ready)
    assert DB_PASSWORD not in log_text(caplog)

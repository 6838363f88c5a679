"""Fixtures of the gateway tests: a gateway on the test nats-server, clients, result events."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from nats.aio.client import Client as NATS
from pydantic import SecretStr

from mumu.broker.connect import connect
from mumu.broker.credentials import AuthDir
from mumu.broker.jsapi import stream_config
from mumu.contracts import headers as h
from mumu.contracts import subjects
from mumu.contracts.events import (
    AnswerDelta,
    AnswerFinal,
    Event,
    Segment,
    TranscriptFinal,
    TranscriptPartial,
    derive_id,
    new_id,
)
from mumu.gateway.app import create_app
from mumu.gateway.settings import GatewaySettings
from mumu.gateway.tokens import TokenSigner
from mumu.gateway.transport import base_url, ssl_context
from mumu.runtime.http import serve
from mumu.runtime.tracing import Tracing
from mumu.settings import Settings
from tests.conftest import provision as provision_on
from tests.pg_fixtures import WorkspaceFactory

SECRET = "gateway-test-secret-0123456789"
WS_A = "11111111-1111-4111-8111-111111111111"
WS_B = "22222222-2222-4222-8222-222222222222"


@dataclass
class Gateway:
    url: str
    app: web.Application
    signer: TokenSigner
    admin_url: str | None = None
    """The database the gateway checks API keys against (as its owner), if it has one."""

    def token(self, workspace: str = WS_A, session: str = "s1", key_id: str | None = None
              ) -> str:
        """A session token; ``key_id`` (the API key's id) is needed where the gateway has
        a database to check it against."""
        return self.signer.issue(workspace, session, key_id=key_id)[0]

    async def key_token(self, workspace: str, session: str = "s1") -> str:
        """A session token of the workspace's first live API key (what ``POST
        /api/session`` gives a holder of that key)."""
        if self.admin_url is None:
            raise RuntimeError("this gateway has no database: use token()")
        conn = await asyncpg.connect(self.admin_url)
        try:
            key_id = await conn.fetchval(
                "SELECT id::text FROM mumu.api_keys WHERE workspace_id = $1::uuid "
                "AND revoked_at IS NULL ORDER BY created_at LIMIT 1", workspace)
        finally:
            await conn.close()
        if key_id is None:
            raise LookupError(f"workspace {workspace} has no live API key")
        return self.token(workspace, session, key_id=key_id)

    def ws_url(self, token: str | None = None, after: int | None = None) -> str:
        base = "ws" + self.url.removeprefix("http") + "/api/ws"  # https: wss
        params = []
        if token is not None:
            params.append(f"token={token}")
        if after is not None:
            params.append(f"after={after}")
        return base + ("?" + "&".join(params) if params else "")


def gateway_settings(settings: Settings, **overrides: Any) -> Settings:
    overrides.setdefault("heartbeat", 5.0)
    gw = GatewaySettings(port=0, session_secret=SecretStr(SECRET), **overrides)
    return settings.model_copy(update={"gateway": gw})


async def provision(settings: Settings, *ids: str) -> None:
    """The test workspaces ``ids`` on the broker, as `mumu up` provisions a workspace
    (``tests.conftest.provision``; nothing when the streams are not applied: such a test
    asks nothing)."""
    creds = settings.nats.credentials
    users = AuthDir(creds.parent) if creds is not None and creds.is_dir() else None
    nc = await connect(settings.nats, name="test-provision")
    try:
        if await stream_config(nc, subjects.STREAM_INGEST) is not None:
            await provision_on(nc, *ids, users=users, nats=settings.nats)
    finally:
        await nc.close()


@contextlib.asynccontextmanager
async def serving(settings: Settings, *, tracing: Tracing | None = None
                  ) -> AsyncIterator[Gateway]:
    """A gateway; the test workspaces WS_A and WS_B are provisioned first. ``tracing``:
    where its spans go."""
    await provision(settings, WS_A, WS_B)
    app = create_app(settings, tracing=tracing)
    runner, port = await serve(app, "127.0.0.1", 0, ssl_context(settings.gateway))
    try:
        yield Gateway(
            base_url(settings.gateway, "127.0.0.1", port), app,
            TokenSigner(settings.gateway.session_secret, settings.gateway.session_ttl),
            admin_url=(settings.database_admin_url.get_secret_value()
                       if settings.database_admin_url is not None else None),
        )
    finally:
        await runner.cleanup()


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One reassembled Whisper model for every gateway test of the run."""
    return tmp_path_factory.mktemp("gateway-models")


@pytest.fixture
def gw_settings(settings: Settings) -> Settings:
    return gateway_settings(settings, wait_timeout=5.0)


@pytest.fixture
async def gateway(nc: NATS, streams: None, gw_settings: Settings) -> AsyncIterator[Gateway]:
    async with serving(gw_settings) as gw:
        yield gw


@pytest.fixture
def workspace(workspace: WorkspaceFactory, workspaces: Any) -> WorkspaceFactory:
    """A workspace in the database *and* on the broker, as `mumu workspace create` and
    `mumu up` make it (its intake stream, upload bucket, and the broker's users)."""

    async def make(name: str) -> tuple[str, str]:
        ws, key = await workspace(name)
        await workspaces(ws)
        return ws, key

    return make


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


Made = tuple[subjects.SubjectPattern, Event]
"""An event and the subject pattern it is published on."""


def _ids(ws: str, session: str, request_id: str, stage: str, *parts: str | int
         ) -> dict[str, str]:
    return {"event_id": derive_id(ws, request_id, stage, *parts), "request_id": request_id,
            "workspace_id": ws, "session_id": session}


def partial_event(ws: str, session: str, rid: str, n: int, text: str) -> Made:
    """Transcribe's ``n``-th partial of a request, as the stage makes it (same id)."""
    seg = Segment(id=n, start=float(n), end=n + 1.0, text=text)
    return subjects.TRANSCRIPT_PARTIAL, TranscriptPartial(
        **_ids(ws, session, rid, "transcribe", "partial", n), segment=seg, language="en")


def transcript_event(ws: str, session: str, rid: str, text: str, *extra: str) -> Made:
    """Transcribe's final of a request; ``extra`` id parts: another event for the same
    request (a spoof, a duplicate)."""
    seg = Segment(id=0, start=0.0, end=1.0, text=text)
    return subjects.TRANSCRIPT_FINAL, TranscriptFinal(
        **_ids(ws, session, rid, "transcribe", "final", *extra), text=text, segments=[seg],
        language="en", language_probability=0.99, duration=1.0, model="test",
        compute_seconds=0.1)


def delta_event(ws: str, session: str, rid: str, n: int, text: str) -> Made:
    """Reason's ``n``-th answer delta of a request."""
    return subjects.ANSWER_DELTA, AnswerDelta(
        **_ids(ws, session, rid, "reason", "delta", n), index=n, text=text)


def final_event(ws: str, session: str, rid: str, text: str, *extra: str,
                question: str = "q") -> Made:
    """Reason's final answer of a request; ``extra`` as for ``transcript_event``."""
    return subjects.ANSWER_FINAL, AnswerFinal(
        **_ids(ws, session, rid, "reason", "final", *extra), question=question, text=text,
        model="test", total_seconds=0.1)


class Results:
    """Publishes client-visible events as the stages do (same subjects, ids, headers)."""

    def __init__(self, nc: NATS) -> None:
        self.js = nc.jetstream()

    async def _pub(self, made: Made) -> int:
        pattern, event = made
        ack = await self.js.publish(
            pattern.for_workspace(event.workspace_id), event.model_dump_json().encode(),
            headers={h.MSG_ID: event.event_id},
        )
        return int(ack.seq)

    async def partial(self, ws: str, session: str, rid: str, n: int, text: str) -> int:
        return await self._pub(partial_event(ws, session, rid, n, text))

    async def transcript(self, ws: str, session: str, rid: str, text: str, *extra: str) -> int:
        """``extra`` id parts: another event for the same request (a spoof, a duplicate)."""
        return await self._pub(transcript_event(ws, session, rid, text, *extra))

    async def delta(self, ws: str, session: str, rid: str, n: int, text: str) -> int:
        return await self._pub(delta_event(ws, session, rid, n, text))

    async def final(self, ws: str, session: str, rid: str, text: str, *extra: str) -> int:
        return await self._pub(final_event(ws, session, rid, text, *extra))


@pytest.fixture
def results(nc: NATS) -> Results:
    return Results(nc)


def is_type(kind: str) -> Callable[[dict[str, Any]], bool]:
    """A stop of ``receive_until``: the message is of type ``kind``."""
    return lambda m: m["type"] == kind


async def receive_until(
    ws: aiohttp.ClientWebSocketResponse, stop: Any, timeout: float = 10.0
) -> list[dict[str, Any]]:
    """Messages until ``stop(message)`` is true (inclusive)."""
    got: list[dict[str, Any]] = []
    while True:
        msg = await ws.receive(timeout=timeout)
        assert msg.type == aiohttp.WSMsgType.TEXT, f"unexpected {msg.type}: {msg.data!r}"
        data = json.loads(msg.data)
        got.append(data)
        if stop(data):
            return got


def rid() -> str:
    return new_id()

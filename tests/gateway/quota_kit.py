"""Helpers of the quota tests: settings with a database and quotas, a fast LLM backend,
raw NATS asks, and the stages that enforce and free quota slots."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import aiohttp
from nats.aio.client import Client as NATS

from mumu.contracts import headers as h
from mumu.contracts import subjects
from mumu.contracts.events import TextAsk, new_id
from mumu.quota.settings import QuotaSettings
from mumu.runtime import RetryPolicy
from mumu.settings import Settings
from mumu.stages.ingest.stage import build_stage as build_ingest
from mumu.stages.reason.backend import ChatRequest
from mumu.stages.reason.quota import TextAskQuota
from mumu.stages.reason.stage import ReasonStage
from tests.gateway.conftest import gateway_settings
from tests.harness import running
from tests.reason.echo_backend import NoServerBackend


def quota_settings(settings: Settings, pg_settings: Settings, **quota: Any) -> Settings:
    """The gateway's and the stages' settings on the test servers, quotas as given (limits
    read from PostgreSQL on every ask: no cache)."""
    quota.setdefault("limits_cache_seconds", 0.0)
    return gateway_settings(settings, wait_timeout=10.0).model_copy(update={
        "database_url": pg_settings.database_url,
        "database_admin_url": pg_settings.database_admin_url,
        "master_keys": pg_settings.master_keys,
        "quota": QuotaSettings(**quota),
    })


class FastBackend(NoServerBackend):
    """An instant LLM backend (``You asked: <question>``); ``hold``: answers wait until
    it is set, so requests stay in flight."""

    model = "fast"
    retry = RetryPolicy(in_place=0, first_delay=0.05)

    def __init__(self, concurrency: int = 8, hold: asyncio.Event | None = None) -> None:
        self.concurrency = concurrency
        self.hold = hold
        self.started = 0

    async def stream(self, request: ChatRequest) -> AsyncGenerator[str, None]:
        self.started += 1
        if self.hold is not None:
            await self.hold.wait()
        request.completion_tokens += 1
        yield f"You asked: {request.messages[-1].content}"
        request.finish_reason = "stop"


def reason_stage(cfg: Settings, backend: FastBackend) -> ReasonStage:
    """The real reason stage (quotas included, as ``build_stage`` makes it), fast backend."""
    return ReasonStage(cfg.reason, backend, quota=TextAskQuota.of(cfg))


@contextlib.asynccontextmanager
async def enforcing(cfg: Settings, backend: FastBackend) -> AsyncIterator[None]:
    """Reason (admits raw text asks) and ingest (admits raw audio asks and frees the
    slots of requests that ended) on the test server."""
    async with running(build_ingest(cfg), cfg), running(reason_stage(cfg, backend), cfg):
        yield


async def raw_text_ask(nc: NATS, ws: str, text: str, session: str = "raw") -> str:
    """What a producer does with plain nats-py: a TextAsk on ``mumu.ingest.text.<ws>``."""
    rid = new_id()
    ask = TextAsk(event_id=rid, request_id=rid, workspace_id=ws, session_id=session, text=text)
    await nc.jetstream().publish(subjects.INGEST_TEXT.for_workspace(ws),
                                 ask.model_dump_json().encode(), headers={h.MSG_ID: rid})
    return rid


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def http_ask(http: aiohttp.ClientSession, url: str, token: str, text: str, *,
                   wait: bool = False) -> tuple[int, dict[str, Any], dict[str, str]]:
    """A text ask over HTTP: status, JSON body, headers."""
    params = {"wait": "true"} if wait else {}
    async with http.post(f"{url}/api/ask", params=params, headers=auth(token),
                         json={"text": text}) as resp:
        return resp.status, await resp.json(), dict(resp.headers)


def error_codes(messages: list[Any], ws: str) -> dict[str, str]:
    """request id → error code of the ``mumu.error.<ws>`` events seen."""
    found = {}
    for m in messages:
        if m.subject == subjects.ERROR.for_workspace(ws):
            body = json.loads(m.data)
            found[body["request_id"]] = body["code"]
    return found


def answered(messages: list[Any], ws: str) -> set[str]:
    return {json.loads(m.data)["request_id"] for m in messages
            if m.subject == subjects.ANSWER_FINAL.for_workspace(ws)}

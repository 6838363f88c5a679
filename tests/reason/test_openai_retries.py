"""The ``openai`` backend's in-process retries, through a fault-injecting proxy.

The proxy sits in front of the real llama.cpp server: it answers the first
requests with 429/503 (with ``Retry-After``) and forwards the rest unchanged.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from mumu.stages.reason.backend import BackendUnavailableError, ChatMessage, ChatRequest
from mumu.stages.reason.openai_backend import OpenAIBackend, retry_after_seconds
from mumu.stages.reason.settings import OpenAIBackendSettings
from tests.reason.conftest import ModelServer


class FaultProxy:
    def __init__(self, upstream: str, faults: list[tuple[int, str | None]]) -> None:
        self.upstream = upstream
        self.faults = list(faults)
        self.seen: list[float] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(time.perf_counter())
        if self.faults:
            status, retry_after = self.faults.pop(0)
            headers = {"Retry-After": retry_after} if retry_after else {}
            return web.json_response({"error": "busy"}, status=status, headers=headers)
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{self.upstream}/chat/completions",
                data=await request.read(),
                headers={"Content-Type": "application/json"},
            ) as up,
        ):
            resp = web.StreamResponse(
                status=up.status, headers={"Content-Type": "text/event-stream"}
            )
            await resp.prepare(request)
            async for chunk in up.content.iter_any():
                await resp.write(chunk)
            await resp.write_eof()
            return resp


@pytest.fixture
async def proxy(model_server: ModelServer) -> AsyncIterator[tuple[FaultProxy, str]]:
    fault = FaultProxy(model_server.base_url, [])
    app = web.Application()
    app.router.add_post("/v1/chat/completions", fault.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield fault, f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()


def ask() -> ChatRequest:
    return ChatRequest(
        messages=[ChatMessage("user", "What is the capital of France?")],
        max_tokens=16,
        temperature=0.0,
    )


async def collect(backend: OpenAIBackend, request: ChatRequest) -> str:
    return "".join([chunk async for chunk in backend.stream(request)])


async def test_429_and_503_are_retried_honouring_retry_after(
    proxy: tuple[FaultProxy, str],
) -> None:
    fault, url = proxy
    fault.faults = [(429, "0.4"), (503, None)]
    backend = OpenAIBackend(OpenAIBackendSettings(base_url=url, retries=2, retry_backoff=0.05))
    await backend.start()
    try:
        request = ask()
        text = await collect(backend, request)
    finally:
        await backend.close()
    assert "Paris" in text
    assert len(fault.seen) == 3
    assert fault.seen[1] - fault.seen[0] >= 0.4  # waited as the server asked
    assert request.completion_tokens > 0
    assert request.prompt_tokens > 0


async def test_a_long_retry_after_is_handed_to_the_stage_as_the_nak_delay(
    proxy: tuple[FaultProxy, str],
) -> None:
    fault, url = proxy
    fault.faults = [(429, "120")]
    backend = OpenAIBackend(OpenAIBackendSettings(base_url=url, retries=3, max_retry_after=5))
    await backend.start()
    try:
        with pytest.raises(BackendUnavailableError) as caught:
            await collect(backend, ask())
    finally:
        await backend.close()
    assert caught.value.retry_after == 120
    assert len(fault.seen) == 1


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    assert retry_after_seconds("3") == 3
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0  # in the past
    assert retry_after_seconds("soon") is None

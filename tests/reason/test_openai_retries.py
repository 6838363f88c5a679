"""The ``openai`` backend's in-process retries, through a fault-injecting proxy.

The proxy sits in front of the real llama.cpp server: it answers the first
requests with 429/503 (with ``Retry-After``) and forwards the rest unchanged.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from mumu.stages.reason.backend import (
    BackendInterruptedError,
    BackendUnavailableError,
    ChatMessage,
    ChatRequest,
)
from mumu.stages.reason.openai_backend import OpenAIBackend, retry_after_seconds
from mumu.stages.reason.settings import OpenAIBackendSettings
from tests.reason.conftest import ModelServer
from tests.reason.fault_proxy import FaultProxy, serving


@pytest.fixture
async def proxy(model_server: ModelServer) -> AsyncIterator[tuple[FaultProxy, str]]:
    fault = FaultProxy(model_server.base_url, [])
    async with serving(fault) as url:
        yield fault, url


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


async def test_a_stream_that_only_sends_pings_is_interrupted_after_read_timeout(
    proxy: tuple[FaultProxy, str],
) -> None:
    fault, url = proxy
    fault.stall_after = 12  # a few real chunks, then keep-alive pings only
    backend = OpenAIBackend(OpenAIBackendSettings(base_url=url, retries=0, read_timeout=0.5))
    await backend.start()
    request = ask()
    started = time.perf_counter()
    try:
        with pytest.raises(BackendInterruptedError, match="stalled"):
            await collect(backend, request)
    finally:
        await backend.close()
    assert request.completion_tokens > 0, "no real chunk came through before the stall"
    assert time.perf_counter() - started < 3


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    assert retry_after_seconds("3") == 3
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0  # in the past
    assert retry_after_seconds("soon") is None

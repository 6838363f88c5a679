"""Retries of the ``openai`` backend, through a fault-injecting proxy: the backend only
declares its ``RetryPolicy``; the runtime retries in place, counts and logs it.

The proxy sits in front of the real llama.cpp server: it answers the first
requests with 429/503 (with ``Retry-After``) and forwards the rest unchanged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client as NATS

from mumu.runtime import Disposition, RetryPolicy
from mumu.runtime.metrics import StageMetrics
from mumu.settings import Settings
from mumu.stages.reason.backend import (
    BackendInterruptedError,
    BackendUnavailableError,
    ChatMessage,
    ChatRequest,
)
from mumu.stages.reason.openai_backend import OpenAIBackend, retry_after_seconds
from mumu.stages.reason.settings import OpenAIBackendSettings
from mumu.stages.reason.stage import build_stage
from tests.harness import Collector, running
from tests.reason.asks import ask_text, deltas_of, wait_final
from tests.reason.conftest import ModelServer, reason_settings
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


def outcomes(metrics: StageMetrics, route: str = "mumu_ingest") -> dict[str, float | None]:
    """The runtime's disposition counter of the reason stage's text route."""
    return {o.value: metrics.registry.get_sample_value(
        "mumu_stage_messages_total", {"stage": "reason", "route": route, "outcome": o.value})
        for o in Disposition}


async def test_429_and_503_are_retried_in_place_by_the_runtime_honouring_retry_after(
    nc: NATS, streams: None, settings: Settings, proxy: tuple[FaultProxy, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    fault, url = proxy
    fault.faults = [(429, "0.4"), (503, None)]
    cfg = reason_settings(settings, url)
    cfg.reason.openai.retries, cfg.reason.openai.retry_backoff = 2, 0.05
    metrics = StageMetrics("reason")
    async with running(build_stage(cfg), cfg, metrics=metrics), Collector(nc) as seen:
        ask = await ask_text(nc, "What is the capital of France?", session="s-429")
        final = await wait_final(seen, ask.request_id)
    assert len(fault.seen) == 3
    assert fault.seen[1] - fault.seen[0] >= 0.4  # waited as the server asked
    deltas = deltas_of(seen, ask.request_id)
    assert {d.attempt for d in deltas} == {1}  # retried in place: never redelivered
    assert "".join(d.text for d in deltas) == final.text
    assert "Paris" in final.text
    assert final.usage.completion_tokens > 0
    assert final.usage.prompt_tokens > 0
    # the retries are the runtime's: counted and logged by it, not hidden in the backend
    assert outcomes(metrics) == {"ack": 1, "nak": 0, "term": 0, "retry": 2, "hold": 0}
    logged = [r.getMessage() for r in caplog.records if r.name == "mumu.stage"]
    assert sum("retrying in place" in m for m in logged) == 2, logged


async def test_a_long_retry_after_is_not_waited_in_place_but_becomes_the_nak_delay(
    nc: NATS, streams: None, settings: Settings, proxy: tuple[FaultProxy, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    fault, url = proxy
    fault.faults = [(429, "120")]
    cfg = reason_settings(settings, url)
    cfg.reason.openai.retries, cfg.reason.openai.max_retry_after = 3, 5
    metrics = StageMetrics("reason")
    async with running(build_stage(cfg), cfg, metrics=metrics), Collector(nc):
        await ask_text(nc, "Anyone there?", session="s-120")
        async with asyncio.timeout(15):
            while outcomes(metrics)["nak"] != 1:
                await asyncio.sleep(0.05)
    assert len(fault.seen) == 1
    assert outcomes(metrics)["retry"] == 0
    assert any("retrying in 120.00s" in r.getMessage() for r in caplog.records)


async def test_a_stream_that_only_sends_pings_is_interrupted_after_read_timeout(
    proxy: tuple[FaultProxy, str],
) -> None:
    fault, url = proxy
    warm = OpenAIBackend(OpenAIBackendSettings(base_url=url))
    await warm.start()
    try:  # a cold server (just started, busy machine) can take seconds for a first token
        assert "Paris" in await collect(warm, ask())
    finally:
        await warm.close()
    backend = OpenAIBackend(OpenAIBackendSettings(base_url=url, retries=0, read_timeout=1.5))
    await backend.start()
    try:
        fault.stall_after = 12  # a few real chunks, then keep-alive pings only
        request = ask()
        started = time.perf_counter()
        with pytest.raises(BackendInterruptedError, match="stalled"):
            await collect(backend, request)
    finally:
        await backend.close()
    assert request.completion_tokens > 0, "no real chunk came through before the stall"
    assert time.perf_counter() - started < 6


async def test_the_backend_itself_never_retries_it_says_whether_a_retry_may_help(
    proxy: tuple[FaultProxy, str],
) -> None:
    fault, url = proxy
    fault.faults = [(429, "0.4"), (400, None)]
    backend = OpenAIBackend(OpenAIBackendSettings(base_url=url, retries=5))
    await backend.start()
    try:
        with pytest.raises(BackendUnavailableError) as busy:
            await collect(backend, ask())
        with pytest.raises(BackendUnavailableError) as refused:
            await collect(backend, ask())
    finally:
        await backend.close()
    assert len(fault.seen) == 2  # one request each: retrying is the runtime's job
    assert (busy.value.retryable, busy.value.retry_after) == (True, 0.4)
    assert (refused.value.retryable, refused.value.retry_after) == (False, None)
    assert backend.retry == RetryPolicy(in_place=5, first_delay=0.5, max_delay=10.0)


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    assert retry_after_seconds("3") == 3
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0  # in the past
    assert retry_after_seconds("soon") is None

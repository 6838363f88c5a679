"""The embedded ``llama_cpp`` backend (the default): the shipped GGUF, loaded before ready."""

from __future__ import annotations

import asyncio
import time

from nats.aio.client import Client as NATS

from mumu.contracts import subjects
from mumu.settings import Settings
from mumu.stages.reason.llama_backend import LlamaCppBackend, default_model_path
from mumu.stages.reason.settings import LlamaCppBackendSettings, ReasonSettings
from mumu.stages.reason.stage import build_stage
from tests.harness import Collector, running
from tests.reason.asks import ask_text, cancel, deltas_of, finals_of, wait_final

LONG = "Count from 1 to 300, separated by commas."


def embedded(settings: Settings) -> Settings:
    reason = ReasonSettings(
        llama_cpp=LlamaCppBackendSettings(n_threads=1),
        max_tokens=400,
        temperature=0.0,
        context_tokens=2048,
    )
    return settings.model_copy(update={"reason": reason})


async def test_embedded_model_answers_and_stops_on_cancel(
    nc: NATS, streams: None, settings: Settings
) -> None:
    cfg = embedded(settings)
    assert cfg.reason.backend == "llama_cpp"
    async with running(build_stage(cfg), cfg), Collector(nc) as seen:
        ask = await ask_text(nc, "What colour is the sky on a clear day?", session="e1")
        final = await wait_final(seen, ask.request_id)
        deltas = deltas_of(seen, ask.request_id)
        assert "".join(d.text for d in deltas) == final.text
        assert "blue" in final.text.lower()
        assert final.model == default_model_path().stem == "SmolLM2-135M-Instruct.Q4_1"
        assert final.usage.prompt_tokens > 0
        assert 0 < final.usage.completion_tokens < 400

        long = await ask_text(nc, LONG, session="e2")
        await seen.wait_for(lambda _: len(deltas_of(seen, long.request_id)) >= 2, timeout=20)
        sent = time.perf_counter()
        await cancel(nc, long.request_id, session="e2")
        stopped = await wait_final(seen, long.request_id, timeout=5)
        elapsed = time.perf_counter() - sent
    assert stopped.cancelled
    # within a token or two (a token is ~10 ms here when the machine is quiet, 100+ ms when
    # the parallel run loads both cores): far below the seconds the long answer takes
    assert elapsed < 1.0, f"cancelled final after {1000 * elapsed:.0f} ms"
    assert stopped.usage.completion_tokens < 400
    assert "".join(d.text for d in deltas_of(seen, long.request_id)) == stopped.text


async def test_cancelling_a_queued_ask_does_not_wait_for_the_running_answer(
    nc: NATS, streams: None, settings: Settings
) -> None:
    """One model answers one request at a time; the one waiting for it cancels at once."""
    cfg = embedded(settings)
    async with running(build_stage(cfg), cfg), Collector(nc) as seen:
        busy = await ask_text(nc, LONG, session="q1")
        await seen.wait_for(lambda _: len(deltas_of(seen, busy.request_id)) >= 2, timeout=20)
        queued = await ask_text(nc, "What colour is grass?", session="q2")
        async with asyncio.timeout(5):  # the stage holds both: one generating, one queued
            while True:
                info = await nc.jetstream().consumer_info(
                    subjects.STREAM_INGEST, "reason-mumu-ingest"
                )
                if info.num_ack_pending == 2:
                    break
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)  # past the prompt, waiting for the model
        sent = time.perf_counter()
        await cancel(nc, queued.request_id, session="q2")
        stopped = await wait_final(seen, queued.request_id, timeout=5)
        elapsed = time.perf_counter() - sent
        still_running = not finals_of(seen, busy.request_id)
        await cancel(nc, busy.request_id, session="q1")
        await wait_final(seen, busy.request_id, timeout=5)
    assert still_running, "the running answer ended first: the test proved nothing"
    assert stopped.cancelled
    assert stopped.text == ""
    assert not deltas_of(seen, queued.request_id)
    # within a token or two (a token is ~10 ms here when the machine is quiet, 100+ ms when
    # the parallel run loads both cores): far below the seconds the long answer takes
    assert elapsed < 1.0, f"cancelled final after {1000 * elapsed:.0f} ms"


async def test_n_threads_bounds_prompt_reading_too() -> None:
    """``n_threads`` is every thread the model computes on: llama-cpp-python would read
    prompts on all cores, whose spinning threads slowed answers 2-20x beside busy stages."""
    backend = LlamaCppBackend(LlamaCppBackendSettings(n_threads=1), n_ctx=512)
    await backend.start()
    try:
        threads = backend.threads
    finally:
        await backend.close()
    assert threads == (1, 1)

"""The embedded ``llama_cpp`` backend (the default): the shipped GGUF, loaded before ready."""

from __future__ import annotations

import time

from nats.aio.client import Client as NATS

from mumu.settings import Settings
from mumu.stages.reason.llama_backend import default_model_path
from mumu.stages.reason.settings import LlamaCppBackendSettings, ReasonSettings
from mumu.stages.reason.stage import build_stage
from tests.harness import Collector, running
from tests.reason.asks import ask_text, cancel, deltas_of, wait_final


async def test_embedded_model_answers_and_stops_on_cancel(
    nc: NATS, streams: None, settings: Settings
) -> None:
    reason = ReasonSettings(
        llama_cpp=LlamaCppBackendSettings(n_threads=1),
        max_tokens=400,
        temperature=0.0,
        context_tokens=2048,
    )
    cfg = settings.model_copy(update={"reason": reason})
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

        long = await ask_text(nc, "Count from 1 to 300, separated by commas.", session="e2")
        await seen.wait_for(lambda _: len(deltas_of(seen, long.request_id)) >= 2, timeout=20)
        sent = time.perf_counter()
        await cancel(nc, long.request_id, session="e2")
        stopped = await wait_final(seen, long.request_id, timeout=5)
        elapsed = time.perf_counter() - sent
    assert stopped.cancelled
    assert elapsed < 0.1, f"cancelled final after {1000 * elapsed:.0f} ms"
    assert stopped.usage.completion_tokens < 400
    assert "".join(d.text for d in deltas_of(seen, long.request_id)) == stopped.text

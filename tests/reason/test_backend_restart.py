"""The model server dies mid-answer: the request is retried from the start, one final."""

from __future__ import annotations

import asyncio
from pathlib import Path

from nats.aio.client import Client as NATS

from mumu.settings import Settings
from mumu.stages.reason.stage import build_stage
from tests.harness import Collector, running
from tests.reason.asks import ask_text, deltas_of, finals_of, wait_final
from tests.reason.conftest import ModelServer, reason_settings


async def test_killed_backend_is_retried_and_completes_once_back(
    nc: NATS, streams: None, settings: Settings, tmp_path: Path
) -> None:
    server = ModelServer(tmp_path / "llama")
    await asyncio.to_thread(server.start)
    try:
        cfg = reason_settings(settings, server.base_url, max_tokens=200)
        cfg = cfg.model_copy(
            update={"stage": cfg.stage.model_copy(update={"max_deliver": 8, "backoff": [0.3, 0.6]})}
        )
        async with running(build_stage(cfg), cfg), Collector(nc) as seen:
            ask = await ask_text(nc, "Count from 1 to 300, separated by commas.")
            await seen.wait_for(lambda _: len(deltas_of(seen, ask.request_id)) >= 2, timeout=20)
            server.kill()
            await asyncio.sleep(0.5)
            await asyncio.to_thread(server.start)
            final = await wait_final(seen, ask.request_id, timeout=40)
            await asyncio.sleep(0.5)  # a duplicate final would arrive by now
    finally:
        server.stop()
    assert len(finals_of(seen, ask.request_id)) == 1
    assert not final.cancelled
    deltas = deltas_of(seen, ask.request_id)
    attempts = sorted({d.attempt for d in deltas})
    assert attempts[0] == 1
    assert attempts[-1] > 1, attempts
    last = [d for d in deltas if d.attempt == attempts[-1]]
    assert last[0].index == 0
    assert last[0].restart
    assert not any(d.restart for d in deltas if d is not last[0] and d.attempt == attempts[-1])
    assert "".join(d.text for d in last) == final.text
    assert final.usage.completion_tokens == 200
    # the failed attempt's partial answer was never published as final
    first_try = "".join(d.text for d in deltas if d.attempt == 1)
    assert first_try
    assert len(first_try) < len(final.text)

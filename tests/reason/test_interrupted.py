"""llama.cpp's server with its stock settings cuts a stream short when another request arrives.

``python -m llama_cpp.server`` (``interrupt_requests`` on by default) ends the
running stream with ``[DONE]`` and no finish reason. That answer is incomplete:
the stage must retry it from the start, never publish it as a final.
"""

from __future__ import annotations

import asyncio

from nats.aio.client import Client as NATS

from mumu.settings import Settings
from mumu.stages.reason.stage import build_stage
from tests.harness import Collector, running
from tests.reason.asks import ask_text, deltas_of, finals_of, wait_final
from tests.reason.conftest import ModelServer, reason_settings

LONG = "Count from 1 to 300, separated by commas."
TOKENS = 48


async def test_overlapping_asks_are_both_answered_in_full(
    nc: NATS, streams: None, settings: Settings, model_server: ModelServer
) -> None:
    cfg = reason_settings(settings, model_server.base_url, max_tokens=TOKENS)
    before = len(model_server.requests())
    async with running(build_stage(cfg), cfg), Collector(nc) as seen:
        first = await ask_text(nc, LONG, session="s-cut-1")
        await seen.wait_for(lambda _: bool(deltas_of(seen, first.request_id)), timeout=20)
        second = await ask_text(nc, LONG, session="s-cut-2")  # arrives mid-answer
        finals = [await wait_final(seen, a.request_id, timeout=120) for a in (first, second)]
        await asyncio.sleep(0.3)  # a second final would arrive by now
    # the server did cut the first answer short, so it was asked more than twice
    assert len(model_server.requests()) - before > 2
    assert max(d.attempt for d in deltas_of(seen, first.request_id)) > 1
    for ask, final in zip((first, second), finals, strict=True):
        assert len(finals_of(seen, ask.request_id)) == 1
        assert not final.cancelled
        assert final.usage.completion_tokens == TOKENS  # finish reason "length": not truncated
        deltas = deltas_of(seen, ask.request_id)
        last_attempt = max(d.attempt for d in deltas)
        last = [d for d in deltas if d.attempt == last_attempt]
        assert [d.index for d in last] == list(range(len(last)))
        assert "".join(d.text for d in last) == final.text
        shown_before = any(d.attempt < last_attempt for d in deltas)
        assert last[0].restart == shown_before
        assert not any(d.restart for d in last[1:])
    # same prompt, greedy decoding: the same full answer for both
    assert finals[0].text == finals[1].text

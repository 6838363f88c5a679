"""The stage-input fuzz loop shared by the stage tests: publish each generated message on a
stage's input subject and wait for its one dead letter; then a valid message must flow.

A message is ``(payload, headers)``; ``payloads()`` turns a strategy of bodies into one."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TypeVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nats.aio.client import Client as NATS

from mumu.contracts import headers as h
from mumu.contracts import subjects
from tests.harness import Collector, Seen

FUZZ = "Mumu-Fuzz-Id"
"""A header of our own on each fuzzed message: its dead letter keeps it (``Mumu-Orig-``)."""
EXAMPLES = 40

Message = tuple[bytes, dict[str, str]]
T = TypeVar("T")


def payloads(bodies: st.SearchStrategy[bytes]) -> st.SearchStrategy[Message]:
    """Bodies without headers of their own."""
    return bodies.map(lambda body: (body, {}))


def fuzz_ids(letters: list[Seen]) -> Counter[str]:
    return Counter(m.headers.get(h.DLQ_ORIGINAL_PREFIX + FUZZ, "") for m in letters)


def run_examples(loop: asyncio.AbstractEventLoop, examples: st.SearchStrategy[T],
                 one: Callable[[T], Awaitable[None]], count: int, timeout: float = 60) -> None:
    """Hypothesis in this (worker) thread, each example awaited on ``loop`` (run it with
    ``asyncio.to_thread``)."""

    @settings(max_examples=count, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(examples)
    def each(example: T) -> None:
        asyncio.run_coroutine_threadsafe(one(example), loop).result(timeout=timeout)

    each()


async def empty_dead_letters(nc: NATS, stage: str) -> None:
    """Purge ``stage``'s letters once seen: a fuzz run sends more bad input from one
    workspace than its share of MUMU_DLQ holds (128 per stage), past which a letter is
    counted but not stored."""
    await nc.jetstream().purge_stream(subjects.STREAM_DLQ, subject=subjects.DLQ.stage(stage).wildcard)


async def fuzz_stage(
    nc: NATS, stage: str, subject: str, examples: st.SearchStrategy[Message],
    valid_flows: Callable[[], Awaitable[None]], count: int = EXAMPLES,
) -> list[Seen]:
    """Publish ``count`` generated messages on ``subject``, each waited for as exactly one
    dead letter of ``stage`` (with a code and a reason); then ``valid_flows`` must still
    pass. Returns the letters."""
    js = nc.jetstream()
    loop = asyncio.get_running_loop()
    sent: list[str] = []
    async with Collector(nc, subjects.DLQ.stage(stage).wildcard) as letters:

        async def one(message: Message) -> None:
            payload, headers = message
            fid = uuid.uuid4().hex
            sent.append(fid)
            await js.publish(subject, payload, headers={**headers, FUZZ: fid, h.MSG_ID: fid})
            await letters.wait_for(lambda ms: fuzz_ids(ms)[fid] >= 1, timeout=20)
            await empty_dead_letters(nc, stage)

        await asyncio.to_thread(run_examples, loop, examples, one, count)
        await valid_flows()  # the stage neither crashed nor stalled
        counts = fuzz_ids(letters.messages)
        mine = [m for m in letters.messages
                if m.headers.get(h.DLQ_ORIGINAL_PREFIX + FUZZ) in set(sent)]
    assert len(sent) >= count // 2
    assert {fid: counts[fid] for fid in sent} == dict.fromkeys(sent, 1), "one letter each"
    for letter in mine:
        assert letter.headers[h.DLQ_CODE] and letter.headers[h.DLQ_REASON]
    return mine

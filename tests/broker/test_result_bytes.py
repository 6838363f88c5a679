"""The bytes one workspace may put in ``MUMU_RESULTS`` (real nats-server, the real reason
stage): A's huge answers stop at its result budget, so they cannot fill the stream, and
B's results are still stored (``docs/reliability.md``, "Storage bounds")."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

from nats.aio.client import Client as NATS

from mumu.broker.bounds import SHARES
from mumu.broker.streams import apply_stream, load_stream_configs
from mumu.contracts import subjects
from mumu.contracts.events import PipelineError
from mumu.runtime import RetryPolicy
from mumu.runtime.result_budget import budgeted_workspace
from mumu.settings import Settings
from mumu.stages.reason.backend import ChatRequest
from mumu.stages.reason.stage import ReasonStage
from tests.broker.test_storage_bounds import answered, ask
from tests.conftest import provision
from tests.harness import Collector, running
from tests.reason.echo_backend import NoServerBackend

WS_A, WS_B = "ws-huge", "ws-small"
BUDGET = 512 * 1024
"""A's bytes a day in this test (twice it is a quarter of the stream below)."""
STREAM_BYTES = 8 * BUDGET
HUGE = 48_000
"""Characters of each of the two chunks of a huge answer."""
MEDIUM = 100_000
"""Characters of B's answers: bigger than the room A would leave in the stream if its
answers were not stopped at its budget."""


class HugeBackend(NoServerBackend):
    """Answers ``huge ...`` with two 48,000-character chunks, ``medium ...`` with one of
    ``MEDIUM`` characters."""

    model = "huge"
    concurrency = 1
    retry = RetryPolicy(in_place=0, first_delay=0.05)

    async def stream(self, request: ChatRequest) -> AsyncGenerator[str, None]:
        question = request.messages[-1].content
        chunks = ["y" * HUGE, "z" * HUGE] if question.startswith("huge") else ["m" * MEDIUM]
        for chunk in chunks:
            await asyncio.sleep(0)
            request.completion_tokens += 1
            yield chunk
        request.finish_reason = "stop"


async def stored_bytes(nc: NATS) -> dict[str, int]:
    """Bytes (body and headers) ``MUMU_RESULTS`` holds per budgeted workspace."""
    js = nc.jetstream()
    state = (await js.stream_info(subjects.STREAM_RESULTS)).state
    found: dict[str, int] = {}
    for seq in range(max(state.first_seq, 1), state.last_seq + 1):
        msg = await js.get_msg(subjects.STREAM_RESULTS, seq)
        ws = budgeted_workspace(msg.subject or "")
        if ws is not None:
            size = len(msg.data or b"") + sum(len(k) + len(v)
                                              for k, v in (msg.headers or {}).items())
            found[ws] = found.get(ws, 0) + size
    return found


def results_config(**overrides: Any) -> dict[str, Any]:
    config = next(c for c in load_stream_configs() if c["name"] == subjects.STREAM_RESULTS)
    return {**config, **overrides}


async def test_huge_answers_stop_at_their_workspaces_result_budget_and_b_is_answered(
    nc: NATS, streams: None, settings: Settings,
) -> None:
    await apply_stream(nc, results_config(max_bytes=STREAM_BYTES))
    for ws in (WS_A, WS_B):
        await provision(nc, ws)
    stage_settings = settings.stage.model_copy(update={"result_bytes_per_day": BUDGET})
    cfg = settings.model_copy(update={"stage": stage_settings})
    async with running(ReasonStage(cfg.reason, HugeBackend()), cfg), Collector(nc) as seen:
        # A asks for more than the whole stream holds: 30 answers of about 190 KB each
        huge = [await ask(nc, WS_A, f"huge {n}", session=f"a{n}") for n in range(30)]
        await seen.wait_for(lambda _: len(outcomes(seen, WS_A)) >= len(huge), timeout=60)
        medium = [await ask(nc, WS_B, f"medium {n}", session=f"b{n}") for n in range(2)]
        finals = [await answered(seen, event, timeout=15) for event in medium]
    assert [f.text for f in finals] == ["m" * MEDIUM] * 2
    codes = outcomes(seen, WS_A)
    refused = [rid for rid, code in codes.items() if code == "result_bytes_exceeded"]
    done = [rid for rid, code in codes.items() if code == "answered"]
    assert done and refused and len(done) + len(refused) == len(huge)
    held = await stored_bytes(nc)
    assert held[WS_A] <= BUDGET + 1024  # the budget (a day's refill is a few bytes here)
    assert 4 * 2 * BUDGET <= STREAM_BYTES  # so A holds at most a quarter, for ever
    letters = seen.on(subjects.DLQ.stage("reason").for_workspace(WS_A))
    assert len(letters) == len(refused)


def outcomes(seen: Collector, ws: str) -> dict[str, str]:
    """request id → ``answered`` or the error code, for ``ws``."""
    found = {}
    for m in seen.messages:
        if m.subject == subjects.ANSWER_FINAL.for_workspace(ws):
            found[m.json()["request_id"]] = "answered"
        elif m.subject == subjects.ERROR.for_workspace(ws):
            err = PipelineError.model_validate_json(m.data)
            found[err.request_id] = err.code
    return found


def test_the_default_budget_keeps_a_workspace_to_a_quarter_of_mumu_results() -> None:
    """What a workspace holds is at most two days' budget (a full bucket, then a day's
    refill, within the stream's 24 h max age); it must stay within a quarter."""
    config = results_config()
    per_day = Settings().stage.result_bytes_per_day
    assert config["max_age"] == 86_400 * 10**9
    assert 2 * per_day * SHARES <= config["max_bytes"]

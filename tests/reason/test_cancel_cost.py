"""A cancel costs O(1) in every reason replica, however many it remembers."""

from __future__ import annotations

import asyncio
import time

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from mumu.contracts import subjects
from mumu.contracts.events import AnswerFinal, CancelRequest, new_id
from mumu.settings import Settings
from mumu.stages.reason import cancel as cancel_module
from mumu.stages.reason.cancel import CancelRegistry
from mumu.stages.reason.stage import build_stage
from tests.harness import Collector, running
from tests.reason.asks import WS, ask_text, cancel, deltas_of
from tests.reason.conftest import ModelServer, reason_settings


class CountedSeconds(float):
    """A duration that counts how often it is compared with (each look at a remembered
    cancel's age compares it with the memory)."""

    looks = 0

    def __gt__(self, other: object) -> bool:
        CountedSeconds.looks += 1
        return float(self) > other  # type: ignore[operator]

    def __lt__(self, other: object) -> bool:
        CountedSeconds.looks += 1
        return float(self) < other  # type: ignore[operator]


def test_a_cancel_looks_at_a_bounded_number_of_remembered_cancels() -> None:
    registry = CancelRegistry(CountedSeconds(300.0))
    for _ in range(20_000):
        registry.cancel(WS, new_id())
    CountedSeconds.looks = 0
    for _ in range(100):
        registry.cancel(WS, new_id())
    assert registry.remembered == 20_100
    assert CountedSeconds.looks <= 2 * 100  # the old rebuild looked at all 20,000 each time


def test_old_cancels_are_forgotten_and_a_resent_one_is_remembered_anew(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr(cancel_module.time, "monotonic", lambda: now[0])
    registry = CancelRegistry(10.0, max_remembered=3)
    registry.cancel(WS, "a")
    now[0] += 6
    registry.cancel(WS, "b")
    now[0] += 2
    registry.cancel(WS, "a")  # again: remembered from now
    now[0] += 4  # the first "a" would be 12 s old, "b" is 6 s old
    registry.cancel(WS, "c")
    with registry.watch(WS, "a") as a, registry.watch(WS, "b") as b:
        assert a.is_set() and b.is_set()
    now[0] += 5  # "b" is 11 s old (forgotten at the next cancel), "a" 9 s
    registry.cancel(WS, "d")
    with registry.watch(WS, "b") as b, registry.watch(WS, "a") as a:
        assert not b.is_set() and a.is_set()
    registry.cancel(WS, "e")  # over the cap of 3: the oldest ("a") goes
    assert registry.remembered == 3
    with registry.watch(WS, "a") as a:
        assert not a.is_set()


async def test_a_flood_of_cancels_does_not_hold_up_the_cancel_of_a_running_answer(
    nc: NATS, streams: None, settings: Settings, model_server: ModelServer
) -> None:
    """60,000 cancels of other requests reach the replica first (a raw NATS producer can
    send them): with O(n) cancels that is 1.8 billion steps and the answer's own cancel
    waits minutes behind them; with O(1) ones it ends the answer at once."""
    cfg = reason_settings(settings, model_server.base_url, max_tokens=400)
    finals: asyncio.Queue[tuple[float, AnswerFinal]] = asyncio.Queue()

    async def on_final(msg: Msg) -> None:
        finals.put_nowait((time.perf_counter(), AnswerFinal.model_validate_json(msg.data)))

    stage = build_stage(cfg)
    sub = await nc.subscribe(subjects.ANSWER_FINAL.wildcard, cb=on_final)
    async with running(stage, cfg), Collector(nc) as seen:
        # another workspace floods (its own cancel subject fills up at its per-subject
        # limit in MUMU_CONTROL; every replica still hears each one)
        subject = subjects.CONTROL_CANCEL.for_workspace("ws-flood")
        for _ in range(60_000):
            rid = new_id()
            await nc.publish(subject, CancelRequest(
                event_id=rid, request_id=rid, workspace_id="ws-flood", session_id="flood",
            ).model_dump_json().encode())
        await nc.flush()
        ask = await ask_text(nc, "Count from 1 to 300, separated by commas.", session="s-flood")
        await seen.wait_for(lambda _: len(deltas_of(seen, ask.request_id)) >= 3, timeout=60)
        sent = time.perf_counter()
        await cancel(nc, ask.request_id, session="s-flood")
        arrived, final = await asyncio.wait_for(finals.get(), 10)
        remembered = stage.cancels.remembered
    await sub.unsubscribe()
    assert final.request_id == ask.request_id and final.cancelled
    assert arrived - sent < 0.5, f"final {1000 * (arrived - sent):.0f} ms after the cancel"
    assert remembered == 60_001

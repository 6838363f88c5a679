"""Dead letters per workspace on a real nats-server: ``mumu.dlq.<stage>.<ws>`` with a
per-subject limit, so one tenant's flood of bad input never costs another tenant a dead
letter (``docs/reliability.md``, "Storage bounds")."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from mumu.bench.stream import BENCH_HOPS
from mumu.broker.embedded import EmbeddedNats
from mumu.broker.jsapi import api
from mumu.broker.streams import apply_all, apply_stream, load_stream_configs
from mumu.contracts import headers as h
from mumu.contracts import subjects
from mumu.contracts.events import new_id
from mumu.ops import dlq, letters
from mumu.runtime import Inbound, Outbound, PermanentError
from mumu.runtime.metrics import StageMetrics
from mumu.settings import Settings
from tests.harness import Collector, running
from tests.ops.replaying import mumu
from tests.passthrough import PassThrough, Ping

WS_A, WS_B = "ws-flood", "ws-calm"
CAP = 3
"""Letters per stage and workspace in these tests (the shipped limit is 128)."""


class Broken(PassThrough):
    """Dead-letters every message until it is fixed (then forwards it)."""

    def __init__(self) -> None:
        super().__init__()
        self.fixed = False

    async def handle(self, inbound: Inbound[Ping]) -> Sequence[Outbound]:
        if not self.fixed:
            raise PermanentError("internal", "a bug, fixed later")
        return await super().handle(inbound)


def dlq_config(**overrides: Any) -> dict[str, Any]:
    config = next(c for c in load_stream_configs() if c["name"] == subjects.STREAM_DLQ)
    return {**config, **overrides}


async def send(nc: NATS, ws: str, subject: str | None = None) -> str:
    rid = new_id()
    ping = Ping(event_id=rid, request_id=rid, workspace_id=ws, session_id="s")
    await nc.jetstream().publish(subject or BENCH_HOPS[1].for_workspace(ws),
                                 ping.model_dump_json().encode(), headers={h.MSG_ID: rid})
    return rid


async def per_subject(nc: NATS) -> dict[str, int]:
    info = await api(nc, f"STREAM.INFO.{subjects.STREAM_DLQ}", {"subjects_filter": ">"})
    return dict(info["state"].get("subjects") or {})


def letter_of(ws: str) -> str:
    return subjects.DLQ.stage("passthrough").for_workspace(ws)


async def test_a_flood_of_bad_input_fills_only_its_own_dead_letters_and_b_replays_its_own(
    nats_server: EmbeddedNats, nc: NATS, streams: None, settings: Settings,
) -> None:
    await apply_stream(nc, dlq_config(max_msgs_per_subject=CAP))
    stage = Broken()
    metrics = StageMetrics(stage.name)
    refused = metrics.dead_letters_over_share.labels(stage.name, "internal")
    async with running(stage, settings, metrics=metrics), Collector(nc) as seen:
        b_first = await send(nc, WS_B)
        await seen.wait_count(letter_of(WS_B), 1, timeout=10)
        for _ in range(3 * CAP):  # A floods: three times what its subject holds
            await send(nc, WS_A)
        async with asyncio.timeout(20):  # A's letters past its share are counted, not kept...
            while refused._value.get() < 2 * CAP:
                await asyncio.sleep(0.05)
        b_second = await send(nc, WS_B)  # ...and B's new letter is still taken
        await seen.wait_count(letter_of(WS_B), 2, timeout=10)
        counts = await per_subject(nc)
        assert counts == {letter_of(WS_A): CAP, letter_of(WS_B): 2}

        groups = await letters.grouped(nc, workspace=WS_A)
        assert [(g.stage, g.count) for g in groups] == [(stage.name, CAP)]
        stage.fixed = True
        code, out, err = await mumu(nats_server, "dlq", "replay", "--all",
                                    "--workspace", WS_B)
        assert code == 0, err
        assert out.count(f"→ {BENCH_HOPS[1].for_workspace(WS_B)}") == 2
        forwarded = await seen.wait_count(BENCH_HOPS[2].for_workspace(WS_B), 2, timeout=10)
    assert {Ping.model_validate_json(m.data).request_id for m in forwarded} == \
        {b_first, b_second}
    after = await per_subject(nc)
    assert letter_of(WS_B) not in after  # replayed, so out of the DLQ
    assert after[letter_of(WS_A)] == CAP  # A's letters are untouched by B's replay
    assert await dlq.purge(nc, workspace=WS_B) == 0  # a purge of one workspace...
    assert await dlq.purge(nc, workspace=WS_A) == CAP  # ...takes only its letters
    assert await per_subject(nc) == {}


async def test_a_letter_whose_workspace_cannot_be_read_goes_to_the_reserved_token(
    nc: NATS, streams: None, settings: Settings,
) -> None:
    async with running(Broken(), settings), Collector(nc) as seen:
        rid = await send(nc, WS_A, subject=f"{BENCH_HOPS[1].prefix}.not~an~id")
        (letter,) = await seen.wait_count("mumu.dlq.", 1, timeout=10)
    assert letter.subject == letter_of(subjects.DLQ_NO_WORKSPACE) == \
        "mumu.dlq.passthrough._unknown"
    assert letter.headers[f"{h.DLQ_ORIGINAL_PREFIX}{h.MSG_ID}"] == rid
    assert not seen.on("mumu.error.")  # no workspace to tell


LEGACY = {"subjects": ["mumu.dlq.*"], "max_msgs_per_subject": -1,
          "discard_new_per_subject": False, "max_msg_size": -1}
"""MUMU_DLQ as it was before dead letters carried the workspace."""


async def test_apply_moves_letters_stored_per_stage_to_their_workspace_without_loss(
    nc: NATS, streams: None,
) -> None:
    await nc.jetstream().delete_stream(subjects.STREAM_DLQ)
    await api(nc, f"STREAM.CREATE.{subjects.STREAM_DLQ}", dlq_config(**LEGACY))
    js = nc.jetstream()
    sources = [WS_A] * (CAP + 2) + [WS_B, "not~an~id"]
    for n, ws in enumerate(sources):
        await js.publish("mumu.dlq.reason", f"letter {n}".encode(), headers={
            h.DLQ_SUBJECT: f"mumu.ingest.text.{ws}", h.MSG_ID: f"dlq:reason:MUMU_INGEST:{n}"})
    # the new limit applied to the old subjects would have dropped A's oldest letters
    await apply_all(nc, replicas=None)
    counts = await per_subject(nc)
    reason = subjects.DLQ.stage("reason")
    assert counts == {reason.for_workspace(WS_A): CAP + 2, reason.for_workspace(WS_B): 1,
                      reason.for_workspace(subjects.DLQ_NO_WORKSPACE): 1}
    live = (await api(nc, f"STREAM.INFO.{subjects.STREAM_DLQ}"))["config"]
    assert live["subjects"] == [subjects.DLQ.wildcard]
    assert live["max_msgs_per_subject"] == dlq_config()["max_msgs_per_subject"]
    bodies = set()
    for seq in range(1, 2 * len(sources) + 1):
        try:
            msg = await js.get_msg(subjects.STREAM_DLQ, seq)
        except Exception:  # noqa: BLE001 - deleted (the moved originals)
            continue
        bodies.add(msg.data)
    assert bodies == {f"letter {n}".encode() for n in range(len(sources))}


async def test_lowering_a_per_subject_limit_under_what_a_subject_holds_is_refused(
    nc: NATS, streams: None,
) -> None:
    await apply_stream(nc, dlq_config(max_msgs_per_subject=-1, discard_new_per_subject=False))
    for n in range(CAP + 1):
        await nc.jetstream().publish(letter_of(WS_A), f"{n}".encode())
    with pytest.raises(RuntimeError, match=f"{letter_of(WS_A)} \\({CAP + 1}\\)"):
        await apply_stream(nc, dlq_config(max_msgs_per_subject=CAP))
    assert (await per_subject(nc))[letter_of(WS_A)] == CAP + 1  # nothing was dropped

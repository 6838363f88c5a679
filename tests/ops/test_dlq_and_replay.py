"""SRE tools on a real server: dead letters listed, shown, replayed, purged; ranges replayed."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from nats.aio.client import Client as NATS

from mumu.bench.stream import BENCH_HOPS, STREAM_BENCH
from mumu.broker.embedded import EmbeddedNats
from mumu.contracts import headers as h
from mumu.contracts import subjects
from mumu.contracts.events import new_id
from mumu.runtime import Inbound, Outbound, PermanentError
from mumu.runtime.stage import durable_of
from mumu.settings import Settings
from tests.conftest import nats_env
from tests.harness import Collector, running
from tests.passthrough import PassThrough, Ping

WS = "ws-ops"


async def mumu(server: EmbeddedNats, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mumu", *args,
        env={**os.environ, **nats_env(server), "MUMU_LOG_LEVEL": "WARNING"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def count(nc: NATS, stream: str, subject: str) -> int:
    info = await nc.jetstream().stream_info(stream, subjects_filter=subject)
    return sum((info.state.subjects or {}).values())


async def test_dead_letter_is_listed_shown_replayed_and_purged(
    nats_server: EmbeddedNats, nc: NATS, streams: None, settings: Settings
) -> None:
    rid = new_id()
    bad = Ping(event_id=rid, request_id=rid, workspace_id=WS, session_id="s", behaviour="permanent")
    source = BENCH_HOPS[1].for_workspace(WS)
    async with running(PassThrough(), settings), Collector(nc) as seen:
        await nc.jetstream().publish(source, bad.model_dump_json().encode(), headers={h.MSG_ID: rid})
        await seen.wait_count("mumu.dlq.", 1)

    code, out = await mumu(nats_server, "dlq", "ls", "--each")
    assert code == 0
    row = next(line for line in out.splitlines() if "passthrough" in line)
    seq = row.split()[0]
    assert "unsupported_audio" in row and source in row

    code, out = await mumu(nats_server, "dlq", "show", seq)
    assert code == 0
    assert f"{h.DLQ_ORIGINAL_PREFIX}{h.MSG_ID}: {rid}" in out
    assert '"behaviour": "permanent"' in out and "body: application/json" in out

    before = await count(nc, STREAM_BENCH, source)
    code, out = await mumu(nats_server, "dlq", "replay", seq)
    assert code == 0 and f"→ {source}" in out
    assert await count(nc, STREAM_BENCH, source) == before + 1  # back on its subject
    assert await count(nc, subjects.STREAM_DLQ, subjects.DLQ.wildcard) == 0  # and out of the DLQ

    await nc.jetstream().publish("mumu.dlq.somestage.ws-x", b"x", headers={h.DLQ_SUBJECT: source})
    code, out = await mumu(nats_server, "dlq", "purge", "--yes")
    assert code == 0 and "purged 1" in out
    assert await count(nc, subjects.STREAM_DLQ, subjects.DLQ.wildcard) == 0


async def test_replay_republishes_a_range_the_stage_handles_it_and_outputs_dedupe(
    nats_server: EmbeddedNats, nc: NATS, streams: None, settings: Settings, tmp_path: Path
) -> None:
    js = nc.jetstream()
    source = BENCH_HOPS[1].for_workspace(WS)
    out_subject = BENCH_HOPS[2].for_workspace(WS)
    rids = []
    for _ in range(5):  # stream sequences 1..5
        rid = new_id()
        rids.append(rid)
        p = Ping(event_id=rid, request_id=rid, workspace_id=WS, session_id="s")
        await js.publish(source, p.model_dump_json().encode(), headers={h.MSG_ID: rid})
    stage = PassThrough()
    durable = durable_of(stage.name, stage.routes()[0])
    async with Collector(nc) as seen, running(stage, settings):
        await seen.wait_count("mumu.bench.hop2.", 5)
        assert sorted(rid for rid, _ in stage.calls) == sorted(rids)
        export = tmp_path / "range.jsonl"
        code, out = await mumu(nats_server, "replay", "mumu.bench.hop1.*", "--from-seq", "2",
                               "--to-seq", "4", "--to-file", str(export))
        assert code == 0 and "exported 3 of 3 messages read" in out
        code, out = await mumu(nats_server, "replay", "--from-file", str(export))
        assert code == 0 and "republished 3 of 3 messages read" in out
        # the stage's own consumer delivered the replays and the stage handled them
        await until(lambda: len(stage.calls) == 8)
        await until_settled(nc, durable, delivered=8)
    assert sorted(rid for rid, _ in stage.calls[5:]) == sorted(rids[1:4])
    assert await count(nc, STREAM_BENCH, source) == 8
    assert await count(nc, STREAM_BENCH, out_subject) == 5  # outputs deduplicated


class Broken(PassThrough):
    """Dead-letters every message until it is fixed: why an SRE replays dead letters."""

    def __init__(self, name: str, inp: int, out: int) -> None:
        super().__init__(inp, out)
        self.name = name
        self.fixed = False

    async def handle(self, inbound: Inbound[Ping]) -> Sequence[Outbound]:
        if not self.fixed:
            self.calls.append((inbound.body().request_id, inbound.deliveries))
            raise PermanentError("internal", "a bug, fixed later")
        return await super().handle(inbound)


async def test_dlq_replay_all_and_stage_send_letters_back_to_their_stage(
    nats_server: EmbeddedNats, nc: NATS, streams: None, settings: Settings
) -> None:
    js = nc.jetstream()
    first, second = Broken("first", 0, 1), Broken("second", 2, 3)
    async with running(first, settings), running(second, settings), Collector(nc) as seen:
        for hop, n in ((0, 2), (2, 1)):
            for _ in range(n):
                rid = new_id()
                p = Ping(event_id=rid, request_id=rid, workspace_id=WS, session_id="s")
                await js.publish(BENCH_HOPS[hop].for_workspace(WS), p.model_dump_json().encode(),
                                 headers={h.MSG_ID: rid})
        await seen.wait_count("mumu.dlq.", 3)
        first.fixed = second.fixed = True

        code, out = await mumu(nats_server, "dlq", "replay", "--all", "--stage", "first")
        assert code == 0, out
        assert out.count(f"→ {BENCH_HOPS[0].for_workspace(WS)}") == 2
        await until_count(nc, BENCH_HOPS[1].for_workspace(WS), 2)  # first's outputs
        assert await count(nc, subjects.STREAM_DLQ, "mumu.dlq.first.*") == 0
        assert await count(nc, subjects.STREAM_DLQ, "mumu.dlq.second.*") == 1  # untouched
        assert await count(nc, STREAM_BENCH, BENCH_HOPS[3].for_workspace(WS)) == 0
        assert len(second.calls) == 1  # the second stage saw no replay

        code, out = await mumu(nats_server, "dlq", "replay", "--all")
        assert code == 0, out
        assert out.count("→ ") == 1 and f"→ {BENCH_HOPS[2].for_workspace(WS)}" in out
        await until_count(nc, BENCH_HOPS[3].for_workspace(WS), 1)  # second's output
        assert await count(nc, subjects.STREAM_DLQ, subjects.DLQ.wildcard) == 0
    # each letter came back to its stage as a new message (first delivery), handled once more
    assert [d for _, d in first.calls] == [1, 1, 1, 1]
    assert [d for _, d in second.calls] == [1, 1]
    assert sorted(rid for rid, _ in first.calls[2:]) == sorted(rid for rid, _ in first.calls[:2])


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


async def until_count(nc: NATS, subject: str, want: int, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while await count(nc, STREAM_BENCH, subject) < want:
            await asyncio.sleep(0.02)
    assert await count(nc, STREAM_BENCH, subject) == want


async def until_settled(nc: NATS, durable: str, delivered: int, timeout: float = 10.0) -> None:
    """The consumer delivered ``delivered`` messages and every one of them was acked."""
    js = nc.jetstream()
    async with asyncio.timeout(timeout):
        while True:
            info = await js.consumer_info(STREAM_BENCH, durable)
            if info.delivered.consumer_seq == delivered and info.num_ack_pending == 0:
                break
            await asyncio.sleep(0.02)
    assert info.num_pending == 0 and info.num_redelivered == 0

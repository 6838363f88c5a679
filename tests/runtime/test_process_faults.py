"""A stage process killed or stopped under load loses nothing (real server, real processes)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from nats.aio.client import Client as NATS

from mumu.bench.stream import BENCH_HOPS, STREAM_BENCH
from mumu.broker.embedded import EmbeddedNats
from mumu.contracts import headers as h
from tests.conftest import nats_env
from tests.passthrough import Ping

ROOT = Path(__file__).parents[2]
WS = "ws-proc"


async def start_stage(server: EmbeddedNats, **env: str) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.passthrough", cwd=ROOT,
        env={**os.environ, **nats_env(server), "MUMU_LOG_LEVEL": "WARNING", **env},
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    assert line.strip() == b"consuming"
    return proc


async def stored_on(nc: NATS, subject: str) -> list[Ping]:
    """Every message the stream kept on ``subject`` (duplicates would show here)."""
    js = nc.jetstream()
    sub = await js.subscribe(subject, ordered_consumer=True)
    info = await js.stream_info(STREAM_BENCH, subjects_filter=subject)
    total = sum((info.state.subjects or {}).values())
    out = []
    for _ in range(total):
        msg = await sub.next_msg(timeout=5)
        out.append(Ping.model_validate_json(msg.data))
    await sub.unsubscribe()
    return out


async def publish(nc: NATS, count: int, behaviour: str = "ok", seconds: float = 0.0) -> list[str]:
    js = nc.jetstream()
    ids = []
    pending = []
    for i in range(count):
        rid = f"r{i:05d}-{behaviour}"
        ping = Ping(event_id=rid, request_id=rid, workspace_id=WS, session_id="s",
                    behaviour=behaviour, seconds=seconds)  # type: ignore[arg-type]
        pending.append(js.publish(BENCH_HOPS[1].for_workspace(WS),
                                  ping.model_dump_json().encode(), headers={h.MSG_ID: rid}))
        ids.append(rid)
        if len(pending) >= 200:
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)
    return ids


async def test_sigkill_mid_batch_redelivers_every_in_flight_message_exactly_once(
    nats_server: EmbeddedNats, nc: NATS, streams: None
) -> None:
    first = await start_stage(nats_server, MUMU_STAGE__ACK_WAIT="2")
    ids = await publish(nc, 6, "slow", seconds=1.5)  # still being handled at the kill
    ids += await publish(nc, 1, "die_after_publish")  # output published, then SIGKILL, no ack
    ids += await publish(nc, 4, "ok")
    assert await asyncio.wait_for(first.wait(), 20) == -signal.SIGKILL
    js = nc.jetstream()
    killed = await js.consumer_info(STREAM_BENCH, "passthrough-mumu-bench")
    assert killed.num_ack_pending >= 7, "several messages were in flight when it died"
    second = await start_stage(nats_server, MUMU_STAGE__ACK_WAIT="2")
    try:
        for _ in range(150):  # redelivered after ack_wait, then acked by the second process
            info = await js.consumer_info(STREAM_BENCH, "passthrough-mumu-bench")
            if info.num_ack_pending == 0 and info.num_pending == 0:
                break
            await asyncio.sleep(0.2)
        assert info.num_ack_pending == 0 and info.num_pending == 0
        assert info.delivered.consumer_seq >= len(ids) + 7  # the in-flight ones came back
        out = await stored_on(nc, BENCH_HOPS[2].for_workspace(WS))
        got = [p.request_id for p in out]
        assert sorted(got) == sorted(ids), "every one arrives downstream exactly once"
    finally:
        second.send_signal(signal.SIGTERM)
        await second.wait()


async def test_sigterm_under_load_loses_nothing(
    nats_server: EmbeddedNats, nc: NATS, streams: None
) -> None:
    total = 2000
    first = await start_stage(
        nats_server, MUMU_STAGE__CONCURRENCY="32", MUMU_STAGE__DRAIN_TIMEOUT="10"
    )
    ids = await publish(nc, total, "slow", seconds=0.02)
    js = nc.jetstream()
    for _ in range(200):  # stop it in the middle of the load
        info = await js.consumer_info(STREAM_BENCH, "passthrough-mumu-bench")
        if info.delivered.stream_seq >= total // 4:
            break
        await asyncio.sleep(0.05)
    first.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(first.wait(), 30) == 0  # drained cleanly
    stopped_at = (await js.consumer_info(STREAM_BENCH, "passthrough-mumu-bench"))
    assert stopped_at.num_pending > 0, "the stage was stopped after the load, not during it"

    second = await start_stage(nats_server, MUMU_STAGE__CONCURRENCY="64")
    try:
        for _ in range(600):
            info = await js.consumer_info(STREAM_BENCH, "passthrough-mumu-bench")
            if info.num_pending == 0 and info.num_ack_pending == 0:
                break
            await asyncio.sleep(0.1)
    finally:
        second.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(second.wait(), 30) == 0
    out = await stored_on(nc, BENCH_HOPS[2].for_workspace(WS))
    got = [p.request_id for p in out]
    assert len(got) == total, f"{total - len(set(got))} lost, {len(got) - len(set(got))} duplicated"
    assert sorted(got) == sorted(ids)

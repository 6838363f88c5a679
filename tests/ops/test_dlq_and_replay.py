"""SRE tools on a real server: dead letters listed, shown, replayed, purged; ranges replayed."""

from __future__ import annotations

import asyncio
import os
import sys

from nats.aio.client import Client as NATS

from mumu.bench.stream import BENCH_HOPS, STREAM_BENCH
from mumu.broker.embedded import EmbeddedNats
from mumu.contracts import headers as h
from mumu.contracts import subjects
from mumu.contracts.events import new_id
from mumu.settings import Settings
from tests.harness import Collector, running
from tests.passthrough import PassThrough, Ping

WS = "ws-ops"


async def mumu(server: EmbeddedNats, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mumu", *args,
        env={**os.environ, "MUMU_NATS__URL": server.url, "MUMU_LOG_LEVEL": "WARNING"},
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

    code, out = await mumu(nats_server, "dlq", "ls")
    assert code == 0
    row = next(line for line in out.splitlines() if "passthrough" in line)
    seq = row.split()[0]
    assert "unsupported_audio" in row and source in row

    code, out = await mumu(nats_server, "dlq", "show", seq)
    assert code == 0
    assert f"{h.DLQ_ORIGINAL_PREFIX}{h.MSG_ID}: {rid}" in out
    assert '"behaviour": "permanent"' in out

    before = await count(nc, STREAM_BENCH, source)
    code, out = await mumu(nats_server, "dlq", "replay", seq)
    assert code == 0 and f"→ {source}" in out
    assert await count(nc, STREAM_BENCH, source) == before + 1  # back on its subject
    assert await count(nc, subjects.STREAM_DLQ, "mumu.dlq.*") == 0  # and out of the DLQ

    await nc.jetstream().publish("mumu.dlq.somestage", b"x", headers={h.DLQ_SUBJECT: source})
    code, out = await mumu(nats_server, "dlq", "purge", "--yes")
    assert code == 0 and "purged 1" in out
    assert await count(nc, subjects.STREAM_DLQ, "mumu.dlq.*") == 0


async def test_replay_republishes_a_range_and_stages_dedupe_the_outputs(
    nats_server: EmbeddedNats, nc: NATS, streams: None, settings: Settings
) -> None:
    js = nc.jetstream()
    source = BENCH_HOPS[1].for_workspace(WS)
    out_subject = BENCH_HOPS[2].for_workspace(WS)
    for _ in range(5):  # stream sequences 1..5
        rid = new_id()
        p = Ping(event_id=rid, request_id=rid, workspace_id=WS, session_id="s")
        await js.publish(source, p.model_dump_json().encode(), headers={h.MSG_ID: rid})
    async with Collector(nc) as seen, running(PassThrough(), settings):
        await seen.wait_count("mumu.bench.hop2.", 5)
        code, out = await mumu(nats_server, "replay", "mumu.bench.hop1.*", "--from-seq", "2",
                               "--to-seq", "4")
        assert code == 0 and "replayed 3 messages from MUMU_BENCH" in out
        await seen.wait_count("mumu.bench.hop1.", 3)  # republished
        await asyncio.sleep(1.0)  # the stage handles the replays
    assert await count(nc, STREAM_BENCH, source) == 8
    assert await count(nc, STREAM_BENCH, out_subject) == 5  # outputs deduplicated

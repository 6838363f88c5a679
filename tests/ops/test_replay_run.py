"""Running a replay: Ctrl-C writes a checkpoint and --resume finishes without repeats; a
progress bar on a terminal; --rate; publishes pipelined."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import signal
import sys
from pathlib import Path

from nats.aio.client import Client as NATS

from mumu.broker.embedded import EmbeddedNats
from mumu.contracts import consumers
from mumu.contracts import headers as h
from mumu.contracts.subjects import TRANSCRIPT_FINAL
from tests.conftest import nats_env
from tests.harness import Collector
from tests.ops.replaying import mumu, mumu_json, transcript

WS = "ws-run"


async def _store(nc: NATS, n: int) -> None:
    js = nc.jetstream()
    futures = []
    for i in range(n):
        event = transcript(WS, f"q{i}")
        futures.append(await js.publish_async(
            TRANSCRIPT_FINAL.for_workspace(WS), event.model_dump_json().encode(),
            headers={h.MSG_ID: event.event_id}))
    await asyncio.gather(*futures)


async def _interrupted(server: EmbeddedNats, *args: str, after: int, seen: Collector,
                       prefix: str) -> tuple[int, str]:
    """``mumu ARGS``, sent SIGINT once ``after`` messages were seen on ``prefix``."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mumu", *args,
        env={**os.environ, **nats_env(server), "MUMU_LOG_LEVEL": "WARNING"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    await seen.wait_count(prefix, after, timeout=30)
    proc.send_signal(signal.SIGINT)
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode() + err.decode()


async def test_ctrl_c_writes_a_checkpoint_and_resume_publishes_the_rest_once(
    nats_server: EmbeddedNats, nc: NATS, streams: None, tmp_path: Path,
) -> None:
    n = 300
    await _store(nc, n)
    checkpoint = tmp_path / "cp.json"
    replay_subject = consumers.PERSIST_RESULTS.replay.for_workspace(WS)
    async with Collector(nc, "mumu.replay.>") as seen:
        code, out = await _interrupted(
            nats_server, "replay", "mumu.transcript.final.*", "--to-stage", "persist",
            "--rate", "300", "--checkpoint", str(checkpoint), after=60, seen=seen,
            prefix=replay_subject)
        assert code == 130, out
        saved = json.loads(checkpoint.read_text())
        first = len(seen.messages)
        assert 60 <= first < n
        assert saved["positions"]["MUMU_RESULTS"] == first + 1  # all acked, none lost
        assert "`mumu replay --resume` continues" in out

        summary = await mumu_json(nats_server, "replay", "--resume", "--checkpoint",
                                  str(checkpoint))
        await seen.wait_count(replay_subject, n)
        await asyncio.sleep(0.2)  # anything extra would have arrived by now
    sources = [m.headers[h.REPLAY_SOURCE] for m in seen.messages]
    assert len(sources) == n and len(set(sources)) == n  # every message once, no repeats
    assert {m.headers[h.REPLAY] for m in seen.messages} == {saved["replay_id"]}
    assert summary["published"] == n - first
    assert not checkpoint.exists()  # done: nothing left to resume


async def test_an_interrupted_export_resumes_without_repeated_lines(
    nats_server: EmbeddedNats, nc: NATS, streams: None, tmp_path: Path,
) -> None:
    n = 2000
    await _store(nc, n)
    out, checkpoint = tmp_path / "out.jsonl", tmp_path / "cp.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mumu", "replay", "MUMU_RESULTS", "--to-file", str(out),
        "--checkpoint", str(checkpoint),
        env={**os.environ, **nats_env(nats_server), "MUMU_LOG_LEVEL": "WARNING"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(20):
        while not out.exists():
            await asyncio.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    await proc.communicate()
    if proc.returncode == 130:  # stopped part-way (a fast machine may have finished)
        await mumu_json(nats_server, "replay", "--resume", "--checkpoint", str(checkpoint))
    seqs = [json.loads(line)["seq"] for line in out.read_text().splitlines()]
    assert seqs == list(range(1, n + 1))


async def test_progress_bar_with_eta_on_a_terminal_and_none_in_a_pipe(
    nats_server: EmbeddedNats, nc: NATS, streams: None,
) -> None:
    await _store(nc, 40)
    args = [sys.executable, "-m", "mumu", "replay", "mumu.transcript.final.*", "--to-stage",
            "persist", "--rate", "50"]
    env = {**os.environ, **nats_env(nats_server), "MUMU_LOG_LEVEL": "WARNING"}
    master, replica = pty.openpty()
    proc = await asyncio.create_subprocess_exec(*args, env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=replica)
    os.close(replica)
    await proc.communicate()
    screen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        screen += chunk
    os.close(master)
    assert proc.returncode == 0
    text = screen.decode()
    assert "ETA" in text and "MUMU_RESULTS [" in text
    assert "100%" in text and "40/40" in text

    code, out, err = await mumu(nats_server, "replay", "mumu.transcript.final.*", "--dry-run")
    assert code == 0 and "ETA" not in err + out


async def test_rate_limits_publishing_and_publishes_are_pipelined(
    nats_server: EmbeddedNats, nc: NATS, streams: None,
) -> None:
    await _store(nc, 2000)
    fast = await mumu_json(nats_server, "replay", "mumu.transcript.final.*", "--to-stage",
                           "persist")
    assert fast["published"] == 2000
    assert fast["max_in_flight"] > 1  # more than one PubAck awaited at once
    slow = await mumu_json(nats_server, "replay", "mumu.transcript.final.*", "--to-seq", "60",
                           "--to-stage", "persist", "--rate", "100")
    assert slow["published"] == 60
    assert slow["seconds"] >= 0.55  # 60 messages at 100/s

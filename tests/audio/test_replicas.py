"""Two transcribe processes on one durable consumer share the work; SIGKILL loses nothing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from nats.aio.client import Client as NATS

from mumu.broker.embedded import EmbeddedNats
from mumu.contracts import headers as h
from mumu.contracts import subjects
from mumu.contracts.events import TranscriptFinal
from mumu.settings import Settings
from mumu.stages.ingest.stage import build_stage as build_ingest
from tests.audio.conftest import SPEECH, WS, Upload, publish_audio
from tests.conftest import nats_env
from tests.harness import Collector, running

ROOT = Path(__file__).parents[2]
PROBES = re.compile(r"probes on (http://\S+)")


class Replica:
    """``python -m mumu stage transcribe`` as a child process, its logs drained."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.url = ""
        self.logs: list[dict[str, object]] = []
        self.ready = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            try:
                entry = json.loads(raw)
            except ValueError:
                entry = {"msg": raw.decode(errors="replace")}
            self.logs.append(entry)
            msg = str(entry.get("msg", ""))
            if m := PROBES.search(msg):
                self.url = m.group(1)
            if msg == "consuming":
                self.ready.set()

    async def metric(self, name: str, **labels: str) -> float:
        async with aiohttp.ClientSession() as s, s.get(f"{self.url}/metrics") as r:
            text = await r.text()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    async def close(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 20)
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


async def start_replica(server: EmbeddedNats, model_cache: Path,
                        extra_env: dict[str, str] | None = None) -> Replica:
    env = {
        **os.environ,
        **nats_env(server),
        "MUMU_LOG_LEVEL": "INFO",
        "MUMU_TRANSCRIBE__MODEL_CACHE_DIR": str(model_cache),
        "MUMU_TRANSCRIBE__CPU_THREADS": "1",
        "MUMU_STAGE__ACK_WAIT": "4",
        "MUMU_STAGE__FETCH_TIMEOUT": "0.2",
        **(extra_env or {}),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mumu", "stage", "transcribe", cwd=ROOT, env=env,
        stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
    )
    return Replica(proc)


@pytest.fixture
async def replicas(
    nats_server: EmbeddedNats, streams: None, model_cache: Path
) -> AsyncIterator[list[Replica]]:
    from mumu.stages.transcribe.model import assemble_bundled

    assemble_bundled(model_cache)  # so the two processes do not race to build it
    started = [await start_replica(nats_server, model_cache) for _ in range(2)]
    try:
        await asyncio.wait_for(asyncio.gather(*(r.ready.wait() for r in started)), 60)
        yield started
    finally:
        await asyncio.gather(*(r.close() for r in started))


async def stored_finals(nc: NATS) -> list[TranscriptFinal]:
    """Every transcript.final the stream kept (a duplicate would show up here)."""
    js = nc.jetstream()
    subject = subjects.TRANSCRIPT_FINAL.for_workspace(WS)
    info = await js.stream_info(subjects.STREAM_RESULTS, subjects_filter=subject)
    total = sum((info.state.subjects or {}).values())
    sub = await js.subscribe(subject, ordered_consumer=True)
    out = [TranscriptFinal.model_validate_json((await sub.next_msg(timeout=5)).data)
           for _ in range(total)]
    await sub.unsubscribe()
    return out


async def test_replicas_share_the_work_and_a_sigkilled_one_loses_nothing(
    nc: NATS, settings: Settings, replicas: list[Replica], upload: Upload
) -> None:
    clips = [f"en0{i}.wav" for i in range(1, 7)]
    ack = {"outcome": "ack", "route": "mumu_audio"}
    assert [await r.metric("mumu_stage_messages_total", **ack) for r in replicas] == [0, 0]
    async with running(build_ingest(settings), settings), Collector(nc) as seen:
        short = [await publish_audio(nc, (SPEECH / c).read_bytes()) for c in clips]
        await seen.wait_count("mumu.transcript.final.", len(short), timeout=90)
        # a final is published before its input is acked: the ack count follows it
        async with asyncio.timeout(10):
            while sum(done := [await r.metric("mumu_stage_messages_total", **ack)
                               for r in replicas]) < len(short):
                await asyncio.sleep(0.1)
        assert all(n >= 1 for n in done), f"work not shared: {done}"
        assert sum(done) == len(short)

        await upload("long.flac", (SPEECH / "long_en.flac").read_bytes())  # > 1 MB
        long_id = await publish_audio(nc, b"", extra={h.AUDIO_OBJECT: "long.flac"})
        await seen.wait_for(lambda _: any(
            m.subject.startswith("mumu.transcript.partial.") and long_id.encode() in m.data
            for m in seen.messages), timeout=60)  # mid-transcription: segments are coming out
        busy = [r for r in replicas if await r.metric("mumu_stage_inflight") >= 1]
        assert len(busy) == 1
        victim, survivor = busy[0], next(r for r in replicas if r is not busy[0])
        victim.proc.send_signal(signal.SIGKILL)
        assert await victim.proc.wait() == -signal.SIGKILL
        await seen.wait_for(lambda _: any(
            m.subject.startswith("mumu.transcript.final.") and long_id.encode() in m.data
            for m in seen.messages), timeout=120)
    finals = await stored_finals(nc)
    assert sorted(f.request_id for f in finals) == sorted([*short, long_id])  # each exactly once
    long_final = next(f for f in finals if f.request_id == long_id)
    assert 63 < long_final.duration < 64
    assert "budget" in long_final.text
    assert await survivor.metric("mumu_stage_redeliveries_total") >= 1
    assert not seen.on("mumu.dlq.")

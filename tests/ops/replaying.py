"""Helpers of the replay tests: the CLI as a child process, stored results, consumer states."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy, ConsumerConfig

from mumu.broker.embedded import EmbeddedNats
from mumu.contracts import consumers
from mumu.contracts import headers as h
from mumu.contracts.events import TranscriptFinal, derive_id, new_id
from mumu.contracts.subjects import STREAM_RESULTS, TRANSCRIPT_FINAL
from tests.conftest import nats_env


async def mumu(server: EmbeddedNats, *args: str, env: dict[str, str] | None = None
               ) -> tuple[int, str, str]:
    """``mumu ARGS`` as the operator would run it: (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mumu", *args,
        env={**os.environ, **nats_env(server), "MUMU_LOG_LEVEL": "WARNING", **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def mumu_json(server: EmbeddedNats, *args: str, env: dict[str, str] | None = None
                    ) -> dict[str, Any]:
    code, out, err = await mumu(server, *args, "--json", env=env)
    assert code == 0, err
    result: dict[str, Any] = json.loads(out)
    return result


def transcript(ws: str, text: str, rid: str | None = None) -> TranscriptFinal:
    rid = rid or new_id()
    return TranscriptFinal(
        event_id=derive_id(ws, rid, "transcribe", "final"), request_id=rid, workspace_id=ws,
        session_id="s1", text=text, segments=[], language="en", language_probability=0.99,
        duration=1.5, model="tiny", compute_seconds=0.1,
    )


async def store(nc: NATS, event: TranscriptFinal) -> int:
    """Publish a transcript as the transcribe stage would; its stream sequence."""
    ack = await nc.jetstream().publish(
        TRANSCRIPT_FINAL.for_workspace(event.workspace_id), event.model_dump_json().encode(),
        headers={h.MSG_ID: event.event_id, h.TRACEPARENT: f"00-{'1' * 32}-{'2' * 16}-01"},
    )
    return int(ack.seq)


async def durables(nc: NATS) -> None:
    """The stages' durable consumers of MUMU_RESULTS, as their stages create them."""
    for c in (consumers.REASON_TRANSCRIPTS, consumers.PERSIST_RESULTS):
        await nc.jetstream().add_consumer(STREAM_RESULTS, config=ConsumerConfig(
            durable_name=c.durable, ack_policy=AckPolicy.EXPLICIT,
            filter_subjects=[p.wildcard for p in c.inputs] + [c.replay.wildcard],
        ))


async def consumer_states(nc: NATS, stream: str) -> dict[str, tuple[Any, ...]]:
    """Every consumer of ``stream``: delivered, ack floor, pending, ack pending, redelivered."""
    states = {}
    for info in await nc.jetstream().consumers_info(stream):
        d, a = info.delivered, info.ack_floor
        states[info.name] = (d.consumer_seq if d else 0, d.stream_seq if d else 0,
                             a.consumer_seq if a else 0, a.stream_seq if a else 0,
                             info.num_pending, info.num_ack_pending, info.num_redelivered)
    return states

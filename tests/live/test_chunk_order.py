"""A reconnecting producer's chunks: repeats are dropped by sequence number, a chunk stored
after a later one is put back in order, and a gap is waited for a bounded time (on
JetStream's stored times), then skipped and counted. The real-server test streams the same
clip in order, shuffled with repeats, and with a chunk that never comes."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from nats.aio.client import Client as NATS

from mumu.contracts import headers as h
from mumu.contracts import subjects
from mumu.contracts.events import LiveStart
from mumu.contracts.options import AudioOptions
from mumu.runtime.metrics import StageMetrics
from mumu.settings import Settings
from mumu.stages.transcribe.live.chunks import Chunk, ChunkOrder, Gap
from mumu.stages.transcribe.live.endpoint import SAMPLE_RATE
from mumu.stages.transcribe.live.settings import LiveSettings
from mumu.stages.transcribe.settings import TranscribeSettings
from mumu.stages.transcribe.stage import build_stage
from tests.conftest import Ensure
from tests.harness import Collector, running
from tests.live.test_live_nats import WS, as_pcm16, finals_of, speech_with_pauses

CHUNK = int(0.25 * SAMPLE_RATE)


def chunk(seq: int, stored: float, end: bool = False) -> Chunk:
    return Chunk(seq, bytes([seq % 256]), end, stored)


def seqs(chunks: list[Chunk]) -> list[int]:
    return [c.seq for c in chunks]


def test_repeats_are_dropped_and_a_late_stored_chunk_is_put_back_in_order() -> None:
    order = ChunkOrder(gap_wait=2.0)
    out: list[Chunk] = []
    for seq, at in [(1, 0.0), (2, 0.1), (2, 0.2), (4, 0.3), (5, 0.4), (3, 0.5), (4, 0.6),
                    (1, 0.7), (6, 0.8)]:
        out += order.add(chunk(seq, at))
    assert seqs(out) == [1, 2, 3, 4, 5, 6]
    assert (order.duplicates, order.late, order.gaps) == (3, 0, [])
    assert not order.waiting


def test_a_gap_is_skipped_once_a_chunk_stored_past_the_wait_arrives() -> None:
    order = ChunkOrder(gap_wait=1.0)
    out = order.add(chunk(1, 0.0)) + order.add(chunk(3, 0.2)) + order.add(chunk(4, 0.7))
    assert seqs(out) == [1] and order.waiting and order.deadline() == 1.2
    out = order.add(chunk(5, 1.3))  # stored after the wait: chunk 2 is given up
    assert seqs(out) == [3, 4, 5] and order.gaps == [Gap(2, 2)]
    assert order.add(chunk(2, 1.4)) == [] and order.late == 1  # it came too late
    # a replay of the same stored chunks takes the same decisions
    again = ChunkOrder(gap_wait=1.0)
    replayed = [c for s, at in [(1, 0.0), (3, 0.2), (4, 0.7), (5, 1.3), (2, 1.4)]
                for c in again.add(chunk(s, at))]
    assert seqs(replayed) == [1, 3, 4, 5] and again.gaps == order.gaps


def test_a_gap_filled_within_the_wait_loses_nothing_and_give_up_ends_a_wait() -> None:
    order = ChunkOrder(gap_wait=1.0)
    out = order.add(chunk(1, 0.0)) + order.add(chunk(3, 0.1)) + order.add(chunk(2, 1.05))
    assert seqs(out) == [1, 2, 3] and order.gaps == []
    out = order.add(chunk(6, 2.0, end=True))  # 4 and 5 missing, then nothing more comes
    assert out == [] and order.waiting
    out = order.give_up()  # the live wait timed out
    assert seqs(out) == [6] and out[0].end and order.gaps == [Gap(4, 5)]


def test_held_chunks_are_bounded() -> None:
    order = ChunkOrder(gap_wait=60.0, max_ahead=3)
    out = [c for s in (2, 3, 4, 5) for c in order.add(chunk(s, 0.0))]
    assert seqs(out) == [2, 3, 4, 5] and order.gaps == [Gap(1, 1)]


async def publish_stream(nc: NATS, audio: np.ndarray, order: list[int],
                         pace: float = 0.05) -> str:
    """A LiveStart, then the 250 ms chunks of ``audio`` by sequence number in ``order``
    (repeats with fresh message ids, so JetStream stores them again, as after a producer's
    reconnect past the dedupe window); the highest number carries the end."""
    js = nc.jetstream()
    stream_id = uuid.uuid4().hex
    start = LiveStart(event_id=str(uuid.uuid4()), request_id=f"live{stream_id[:12]}",
                      workspace_id=WS, session_id="s-order", stream_id=stream_id,
                      options=AudioOptions(language="en"))
    await js.publish(subjects.INGEST_LIVE.for_workspace(WS), start.model_dump_json().encode())
    chunks = [audio[i:i + CHUNK] for i in range(0, audio.size, CHUNK)]
    for n, seq in enumerate(order):
        await js.publish(subjects.live_chunk(stream_id, WS), as_pcm16(chunks[seq - 1]), headers={
            h.CHUNK_SEQ: str(seq), h.MSG_ID: f"{stream_id}.{seq}.{n}",
            **({h.STREAM_END: "true"} if seq == len(chunks) else {})})
        await asyncio.sleep(pace)
    return start.request_id


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_repeats_and_reordering_change_nothing_and_a_lost_chunk_is_waited_for_then_skipped(
    nc: NATS, streams: None, workspaces: Ensure, settings: Settings, tmp_path: Path,
) -> None:
    await workspaces(WS)
    cfg = settings.model_copy(update={"transcribe": TranscribeSettings(
        model_cache_dir=tmp_path.parent / "models", cpu_threads=2,
        live=LiveSettings(gap_wait=1.0))})
    audio = speech_with_pauses("en01.wav")
    n = -(-audio.size // CHUNK)
    in_order = list(range(1, n + 1))
    # 2 and 3 repeated (a reconnect re-sends what was not acked), 6 stored after 7
    shuffled = [1, 2, 3, 2, 3, 4, 5, 7, 6, *range(8, n + 1)]
    lost = [s for s in in_order if s != 6]  # 6 never comes
    metrics = StageMetrics("transcribe")

    def counted(outcome: str) -> float:
        value = metrics.registry.get_sample_value(
            "mumu_live_chunks_total", {"stage": "transcribe", "outcome": outcome})
        return value or 0.0

    async with running(build_stage(cfg), cfg, metrics=metrics), \
            Collector(nc, subjects.TRANSCRIPT_FINAL.for_workspace(WS),
                      subjects.STREAM_RESULTS) as seen:
        texts = []
        for order in (in_order, shuffled):
            rid = await publish_stream(nc, audio, order)
            await seen.wait_for(lambda _, r=rid: any(
                f.request_id.startswith(r) for f in finals_of(seen)), timeout=90)
            texts.append([f.text for f in finals_of(seen) if f.request_id.startswith(rid)])
        assert counted("duplicate") == 2 and counted("skipped") == 0
        sent = time.monotonic()
        rid = await publish_stream(nc, audio, lost, pace=0.0)
        await seen.wait_for(lambda _: any(
            f.request_id.startswith(rid) for f in finals_of(seen)), timeout=90)
        waited = time.monotonic() - sent
    assert texts[0] == texts[1] and "quick brown fox" in texts[0][0].lower()
    assert counted("skipped") == 1  # chunk 6, after the bounded wait
    assert waited >= 1.0
    lossy = [f.text for f in finals_of(seen) if f.request_id.startswith(rid)]
    assert len(lossy) == 1 and lossy[0]  # the stream went on past the gap to its final

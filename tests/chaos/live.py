"""Live streams over NATS during the chaos run: a producer (the workspace's own producer
credentials) streams PCM16 chunks at the pace of speech; afterwards, what the results
stream holds for each stream is checked: every utterance final exactly once, in order,
committed text that only grows, and the words that were spoken."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import nats
import nats.errors
import numpy as np
from nats.aio.client import Client as NATS

from mumu.contracts import headers as h
from mumu.contracts import subjects
from mumu.contracts.events import LiveStart, TranscriptFinal, TranscriptPartial
from mumu.contracts.options import AudioOptions
from mumu.contracts.subjects import producer_inbox_prefix
from tests.live.test_live_nats import CHUNK, as_pcm16, speech_with_pauses

CLIPS = (("en01.wav", "quick brown fox"), ("en02.wav", "quarterly report"))
"""What each stream says (two utterances) and a phrase each final must hold."""


@dataclass
class LiveRun:
    workspace: str
    request_id: str = field(default_factory=lambda: f"live{uuid.uuid4().hex[:12]}")
    stream_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    started: float = 0.0
    ended: float = 0.0
    publish_retries: int = 0

    @property
    def utterance_ids(self) -> set[str]:
        return {f"{self.request_id}-{n}" for n in range(len(CLIPS))}


async def producer(url: str, seed: Path, workspace: str) -> NATS:
    return await nats.connect(url, nkeys_seed=str(seed),
                              inbox_prefix=producer_inbox_prefix(workspace),
                              max_reconnect_attempts=-1, reconnect_time_wait=0.5)


async def _publish(nc: NATS, run: LiveRun, subject: str, data: bytes,
                   headers: dict[str, str] | None = None) -> None:
    """Until JetStream acknowledges it (the same message id: a retry is stored once)."""
    js = nc.jetstream()
    deadline = time.monotonic() + 60
    while True:
        try:
            await js.publish(subject, data, headers=headers, timeout=3)
            return
        except (nats.errors.Error, TimeoutError):
            run.publish_retries += 1
            assert time.monotonic() < deadline, "a live chunk was not stored in 60 s"
            await asyncio.sleep(0.5)


async def stream(nc: NATS, run: LiveRun) -> LiveRun:
    """Publish the stream's start and its audio in 250 ms chunks at real-time pace."""
    audio: np.ndarray = speech_with_pauses(*(name for name, _ in CLIPS))
    run.started = time.monotonic()
    start = LiveStart(event_id=str(uuid.uuid4()), request_id=run.request_id,
                      workspace_id=run.workspace, session_id=f"s-{run.stream_id[:8]}",
                      stream_id=run.stream_id, options=AudioOptions(language="en"))
    await _publish(nc, run, subjects.INGEST_LIVE.for_workspace(run.workspace),
                   start.model_dump_json().encode(), {h.MSG_ID: f"{run.stream_id}.start"})
    subject = subjects.live_chunk(run.stream_id, run.workspace)
    chunks = [audio[i:i + CHUNK] for i in range(0, audio.size, CHUNK)]
    for seq, chunk in enumerate(chunks, start=1):
        await _publish(nc, run, subject, as_pcm16(chunk), {
            h.CHUNK_SEQ: str(seq), h.MSG_ID: f"{run.stream_id}.{seq}",
            **({h.STREAM_END: "true"} if seq == len(chunks) else {})})
        await asyncio.sleep(0.25)
    run.ended = time.monotonic()
    return run


async def transcripts(nc: NATS, workspace: str) -> tuple[list[TranscriptPartial],
                                                         list[TranscriptFinal]]:
    """Every partial and final of ``workspace`` the results stream holds."""
    js = nc.jetstream()
    out: tuple[list[TranscriptPartial], list[TranscriptFinal]] = ([], [])
    for pattern, model, into in (
        (subjects.TRANSCRIPT_PARTIAL, TranscriptPartial, out[0]),
        (subjects.TRANSCRIPT_FINAL, TranscriptFinal, out[1]),
    ):
        subject = pattern.for_workspace(workspace)
        info = await js.stream_info(subjects.STREAM_RESULTS, subjects_filter=subject)
        total = sum((info.state.subjects or {}).values())
        if not total:
            continue
        sub = await js.subscribe(subject, stream=subjects.STREAM_RESULTS, ordered_consumer=True)
        try:
            for _ in range(total):
                msg = await sub.next_msg(timeout=10)
                into.append(model.model_validate_json(msg.data))  # type: ignore[arg-type]
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
    return out


def problems(run: LiveRun, partials: list[TranscriptPartial],
             finals: list[TranscriptFinal]) -> list[str]:
    """What is wrong with one stream's transcripts (nothing: an empty list)."""
    mine = [f for f in finals if f.stream_id == run.stream_id]
    found: list[str] = []
    utterances = [f.utterance for f in mine]
    if utterances != list(range(len(CLIPS))):
        found.append(f"{run.request_id}: utterance finals {utterances}, "
                     f"texts {[f.text for f in mine]}")
    for final, (_, phrase) in zip(mine, CLIPS, strict=False):
        if phrase not in final.text.lower():
            found.append(f"{run.request_id}-{final.utterance}: {final.text!r} lacks {phrase!r}")
        committed = [p.committed or "" for p in partials
                     if p.stream_id == run.stream_id and p.utterance == final.utterance]
        # committed text is never changed: a takeover replays the stream and may repeat
        # earlier partials exactly (docs/audio.md), so every two of them agree, and the
        # final starts with the longest
        longest = max(committed, key=len, default="")
        for text in committed:
            if not longest.startswith(text):
                found.append(f"{final.request_id}: committed {text!r} and {longest!r}")
        if not final.text.startswith(longest):
            found.append(f"{final.request_id}: final {final.text!r} drops {longest!r}")
    return found


def replayed_partials(run: LiveRun, partials: list[TranscriptPartial]) -> int:
    """Partials whose committed text is shorter than one before them (a takeover's
    replay repeating earlier ones)."""
    replayed = 0
    seen: dict[int | None, str] = {}
    for p in partials:
        if p.stream_id != run.stream_id:
            continue
        before = seen.get(p.utterance, "")
        if len(p.committed or "") < len(before):
            replayed += 1
        else:
            seen[p.utterance] = p.committed or ""
    return replayed

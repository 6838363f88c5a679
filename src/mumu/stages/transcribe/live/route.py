"""The transcribe stage's live route: one ``LiveStart`` per stream on the stage's durable
consumer; the replica that holds it in progress owns the stream (the runtime's heartbeat
keeps it), reads the stream's chunks from ``MUMU_INGEST`` through an ordered consumer and
publishes partials and one final per utterance, then one ``LiveEnded`` (the stream is
over, whatever ended it: ``Outputs.end``). If the replica dies the start is delivered
again, to another replica, which replays the chunks from the start: the same chunks give
the same events with the same ids, so what was published already is deduplicated
(``docs/audio.md``, "Live speech").

Chunks are taken in sequence order (``chunks.py``: repeats dropped, a gap waited for a
bounded time, then skipped and counted); a stream is admitted as an ask, and one longer
than the workspace's longest audio is cut there, its last utterance final, with a
``quota_exceeded`` error (``limits.py``); barge-in is in ``outputs.py``; with ``batch`` on
(default: on CUDA) the decodes of the streams it serves go to the model in batches
(``batcher.py``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import nats.errors
import numpy as np
from prometheus_client import Counter, Histogram

from mumu.contracts import headers as h
from mumu.contracts import subjects
from mumu.contracts.consumers import TRANSCRIBE_LIVE
from mumu.contracts.events import LiveStart
from mumu.runtime import Inbound, Outbound, PermanentError, Route, StageContext
from mumu.stages.transcribe.live.batcher import LiveBatcher, batching
from mumu.stages.transcribe.live.chunks import Chunk, ChunkOrder
from mumu.stages.transcribe.live.decoder import LiveDecoder
from mumu.stages.transcribe.live.endpoint import SAMPLE_RATE, Vad
from mumu.stages.transcribe.live.limits import LiveLimits
from mumu.stages.transcribe.live.outputs import Outputs, utterance_request_id
from mumu.stages.transcribe.live.settings import LiveSettings
from mumu.stages.transcribe.live.stream import Final, LiveStream
from mumu.stages.transcribe.transcriber import Transcriber

log = logging.getLogger(__name__)

NAME = "transcribe"
MAX_PENDING_CHUNKS = 2_000
"""Chunks the ordered consumer holds ahead of the decoder (about 8 min at 250 ms)."""
GAP_MARGIN = 0.25
"""Seconds a live wait for a missing chunk lasts past ``gap_wait`` (delivery takes time:
a chunk stored within ``gap_wait`` has arrived by then, so the live decision and a
replay's, taken on stored times, agree)."""
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)

__all__ = ["LiveRoute", "pcm16", "utterance_request_id"]


def pcm16(data: bytes) -> np.ndarray:
    """Little-endian signed 16-bit samples as float32 in [-1, 1] (a trailing odd byte is
    dropped: a chunk boundary may split a sample only if the producer is broken)."""
    usable = len(data) - len(data) % 2
    return np.frombuffer(data[:usable], dtype="<i2").astype(np.float32) / 32768.0


def stored_at(msg: Any) -> float:
    """When JetStream stored ``msg`` (seconds since the epoch)."""
    try:
        return float(msg.metadata.timestamp.timestamp())
    except (AttributeError, ValueError, TypeError):  # not a JetStream message
        return time.time()


class LiveRoute:
    def __init__(self, settings: LiveSettings, transcriber: Transcriber, model: str,
                 limits: LiveLimits | None = None, *, workers: int = 1) -> None:
        self.settings = settings
        self.transcriber = transcriber
        self.model = model
        self.limits = limits or LiveLimits(None)
        self.workers = workers
        """Batches of live decodes in the model at once (the engine's model workers)."""
        self.batcher: LiveBatcher | None = None
        """Set in ``start`` when live decodes are batched (``settings.batch``)."""
        self._batches: Histogram | None = None
        self._vad: Vad | None = None
        self._ctx: StageContext | None = None
        self._chunks: Counter | None = None
        self._finals: Counter | None = None

    def route(self) -> Route:
        return Route(
            subjects.STREAM_INGEST, (subjects.INGEST_LIVE.wildcard,), self.handle,
            model=LiveStart, durable=TRANSCRIBE_LIVE.durable,
            concurrency=self.settings.concurrency, ack_wait=self.settings.takeover,
            # a live stream holds its slot for its whole life: fetched ahead, a start would
            # only wait in this replica's queue while another replica may have a slot
            fetch_ahead=0,
        )

    async def start(self, ctx: StageContext) -> None:
        self._ctx = ctx
        self.limits.bind(ctx.js)
        self._vad = await asyncio.to_thread(Vad)  # loads the Silero model
        if self._chunks is None:
            self._chunks = Counter(
                "mumu_live_chunks", "Live chunks not taken as they came, by outcome: "
                "duplicate (a repeat, dropped), late (after its gap was skipped, dropped), "
                "skipped (never came within gap_wait)", ["stage", "outcome"],
                registry=ctx.metrics.registry)
            self._finals = Counter(
                "mumu_live_finals", "Finals of live utterances, by how: promoted (the newest "
                "hypothesis covered all the speech: no decode at the end) or decoded",
                ["stage", "how"], registry=ctx.metrics.registry)
            self._batches = Histogram(
                "mumu_live_batch_size", "Live decodes per model call when live decodes are "
                "batched (MUMU_TRANSCRIBE__LIVE__BATCH): _count is model calls, _sum decodes",
                ["stage"], buckets=BATCH_BUCKETS, registry=ctx.metrics.registry)
            self._batches.labels(NAME)  # a zero count says "not batching"
        if batching(self.settings.batch, self.transcriber.device):
            sizes = self._batches.labels(NAME) if self._batches is not None else None
            self.batcher = LiveBatcher(self.transcriber, self.settings.batch_window_ms,
                                       self.settings.max_batch, workers=self.workers,
                                       on_batch=sizes.observe if sizes is not None else None)
            self.batcher.start()
        log.info("live decodes %s (model on %s)",
                 "batched" if self.batcher else "one by one", self.transcriber.device,
                 extra={"stage": NAME})

    async def stop(self) -> None:
        if self.batcher is not None:
            await self.batcher.stop()
            self.batcher = None
        await self.limits.close()

    async def handle(self, inbound: Inbound[LiveStart]) -> Sequence[Outbound]:
        if self._ctx is None or self._vad is None:
            raise RuntimeError("live route used before start()")
        started = inbound.body()
        decoder = LiveDecoder(self.batcher or self.transcriber, self._vad, started.options,
                              self.settings.encoder_margin)
        stream = LiveStream(decoder.decode, decoder.detect, self.settings)
        out = Outputs(inbound, started, decoder, self.model, barge_in=self.settings.barge_in,
                      on_final=self._count_final)
        try:
            await self._transcribe(inbound, started, stream, out)
        except PermanentError as exc:  # ended for good: what was said is final already
            await out.end(exc.code, stream.utterance, stream.position)
            raise
        await out.end("end", stream.utterance, stream.position)
        return []

    async def _transcribe(self, inbound: Inbound[LiveStart], started: LiveStart,
                          stream: LiveStream, out: Outputs) -> None:
        """The stream's chunks through ``stream`` until its end (a ``PermanentError``
        when something else ends it, after its last final)."""
        assert self._ctx is not None
        if h.REPLAY not in inbound.headers:  # (a replayed stream is over: see limits.py)
            await self.limits.admit(inbound.workspace_id, started.request_id)
        language = started.options.language
        if language is not None and language not in self.transcriber.languages:
            raise PermanentError(
                "schema_violation", f"language {language!r} is not a language of the model")
        subject = subjects.live_chunk(started.stream_id, inbound.workspace_id)
        longest = await self.limits.longest_audio(inbound.workspace_id)
        log.info("live stream %s: transcribed here (delivery %d)", started.stream_id,
                 inbound.deliveries, extra={"stage": NAME, "request_id": started.request_id})
        sub = await self._ctx.js.subscribe(
            subject, stream=subjects.STREAM_INGEST, ordered_consumer=True,
            pending_msgs_limit=MAX_PENDING_CHUNKS,
        )
        try:
            await _Consumer(self, stream, out, started, longest).run(sub)
        finally:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()

    def _count_final(self, final: Final) -> None:
        if self._finals is not None:
            self._finals.labels(NAME, "promoted" if final.promoted else "decoded").inc()

    def count(self, outcome: str, n: int = 1) -> None:
        if self._chunks is not None and n:
            self._chunks.labels(NAME, outcome).inc(n)


class _Consumer:
    """One stream's chunks: in order, within the longest audio, to ``LiveStream``."""

    def __init__(self, route: LiveRoute, stream: LiveStream, out: Outputs,
                 started: LiveStart, longest: float) -> None:
        self.route = route
        self.s = route.settings
        self.stream = stream
        self.out = out
        self.started = started
        self.longest = longest
        self.order = ChunkOrder(self.s.gap_wait, max_ahead=MAX_PENDING_CHUNKS)
        self._extra = {"stage": NAME, "request_id": started.request_id}
        self._noted = 0
        """Gaps of ``order`` logged and counted already."""

    async def run(self, sub: Any) -> None:
        while True:
            waiting = self.order.waiting
            timeout = min(self.s.idle_timeout, self.s.gap_wait + GAP_MARGIN) \
                if waiting else self.s.idle_timeout
            try:
                msg = await sub.next_msg(timeout=timeout)
            except nats.errors.TimeoutError:
                if waiting:  # the missing chunks did not come: go on without them
                    if await self._take(self.order.give_up()):
                        return
                    continue
                await self.out.publish(await self.stream.finish())
                raise PermanentError(
                    "stream_timeout",
                    f"live stream {self.started.stream_id}: no audio for "
                    f"{self.s.idle_timeout:g} s and no end; what was said is final",
                ) from None
            headers = msg.headers or {}
            seq = _sequence(headers.get(h.CHUNK_SEQ), self.order.next)
            if seq is None:  # a broken producer: no retry can read it another way
                await self.out.publish(await self.stream.finish())
                raise PermanentError(
                    "schema_violation",
                    f"live stream {self.started.stream_id}: a chunk's {h.CHUNK_SEQ} is "
                    f"{headers[h.CHUNK_SEQ][:40]!r}, not an integer; what was said is final",
                )
            end = headers.get(h.STREAM_END, "").lower() == "true"
            before = (self.order.duplicates, self.order.late)
            ready = self.order.add(Chunk(seq, msg.data, end, stored_at(msg)))
            self.route.count("duplicate", self.order.duplicates - before[0])
            self.route.count("late", self.order.late - before[1])
            if await self._take(ready):
                return

    async def _take(self, chunks: list[Chunk]) -> bool:
        """Feed chunks in order; True when the stream is over."""
        self._note_gaps()
        for chunk in chunks:
            samples = pcm16(chunk.data)
            room = int((self.longest - self.stream.position) * SAMPLE_RATE) \
                if math.isfinite(self.longest) else samples.size
            if samples.size > room:
                await self.out.publish(await self.stream.finish(samples[:max(room, 0)]))
                raise PermanentError(
                    "quota_exceeded",
                    f"live stream {self.started.stream_id} is longer than this workspace's "
                    f"longest audio ({self.longest:g} s): ended there, what was said up to "
                    "then is final")
            if chunk.end:
                await self.out.publish(await self.stream.finish(samples))
                return True
            if samples.size:
                await self.out.publish(await self.stream.feed(samples))
        return False

    def _note_gaps(self) -> None:
        for gap in self.order.gaps[self._noted:]:
            log.warning("live stream %s: chunks %d..%d did not come within %g s: skipped",
                        self.started.stream_id, gap.first, gap.last, self.s.gap_wait,
                        extra=self._extra)
            self.route.count("skipped", gap.size)
        self._noted = len(self.order.gaps)


def _sequence(raw: str | None, following: int) -> int | None:
    """A chunk's sequence number (absent: ``following``); None when it is no integer."""
    if raw is None:
        return following
    try:
        return int(raw)
    except ValueError:
        return None

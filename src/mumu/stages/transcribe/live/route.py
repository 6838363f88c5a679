"""The transcribe stage's live route: one ``LiveStart`` per stream on the stage's durable
consumer; the replica that holds it in progress owns the stream (the runtime's heartbeat
keeps it), reads the stream's chunks from ``MUMU_INGEST`` through an ordered consumer and
publishes partials and one final per utterance. If the replica dies the start is delivered
again, to another replica, which replays the chunks from the start: the same chunks give
the same events with the same ids, so what was published already is deduplicated
(``docs/audio.md``, "Live speech")."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import nats.errors
import numpy as np

from mumu.contracts import headers as h
from mumu.contracts import subjects
from mumu.contracts.consumers import TRANSCRIBE_LIVE
from mumu.contracts.events import (
    LiveStart,
    Segment,
    TranscriptFinal,
    TranscriptPartial,
    Word,
    derive_id,
)
from mumu.contracts.ids import is_id
from mumu.runtime import Inbound, Outbound, PermanentError, Route, StageContext
from mumu.stages.transcribe.live.decoder import LiveDecoder
from mumu.stages.transcribe.live.endpoint import Vad
from mumu.stages.transcribe.live.settings import LiveSettings
from mumu.stages.transcribe.live.stream import Final, LiveStream, Partial, Update
from mumu.stages.transcribe.transcriber import Transcriber

log = logging.getLogger(__name__)

NAME = "transcribe"
MAX_PENDING_CHUNKS = 2_000
"""Chunks the ordered consumer holds ahead of the decoder (about 8 min at 250 ms)."""


def utterance_request_id(stream_request_id: str, utterance: int) -> str:
    """The request id of one utterance of a stream (an id of its own for reason, persist
    and the client)."""
    candidate = f"{stream_request_id}-{utterance}"
    if is_id(candidate):
        return candidate
    return derive_id("", stream_request_id, NAME, "utterance", utterance)


def pcm16(data: bytes) -> np.ndarray:
    """Little-endian signed 16-bit samples as float32 in [-1, 1] (a trailing odd byte is
    dropped: a chunk boundary may split a sample only if the producer is broken)."""
    usable = len(data) - len(data) % 2
    return np.frombuffer(data[:usable], dtype="<i2").astype(np.float32) / 32768.0


class LiveRoute:
    def __init__(self, settings: LiveSettings, transcriber: Transcriber, model: str) -> None:
        self.settings = settings
        self.transcriber = transcriber
        self.model = model
        self._vad: Vad | None = None
        self._ctx: StageContext | None = None

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
        self._vad = await asyncio.to_thread(Vad)  # loads the Silero model

    async def handle(self, inbound: Inbound[LiveStart]) -> Sequence[Outbound]:
        if self._ctx is None or self._vad is None:
            raise RuntimeError("live route used before start()")
        started = inbound.body()
        language = started.options.language
        if language is not None and language not in self.transcriber.languages:
            raise PermanentError(
                "schema_violation", f"language {language!r} is not a language of the model")
        decoder = LiveDecoder(self.transcriber, self._vad, started.options)
        stream = LiveStream(decoder.decode, decoder.detect, self.settings)
        out = _Outputs(inbound, started, decoder, self.model)
        subject = subjects.live_chunk(started.stream_id, inbound.workspace_id)
        log.info("live stream %s: transcribed here (delivery %d)", started.stream_id,
                 inbound.deliveries, extra={"stage": NAME, "request_id": started.request_id})
        sub = await self._ctx.js.subscribe(
            subject, stream=subjects.STREAM_INGEST, ordered_consumer=True,
            pending_msgs_limit=MAX_PENDING_CHUNKS,
        )
        try:
            await self._consume(sub, stream, out, started)
        finally:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
        return []

    async def _consume(self, sub: Any, stream: LiveStream, out: _Outputs,
                       started: LiveStart) -> None:
        last = 0
        while True:
            try:
                msg = await sub.next_msg(timeout=self.settings.idle_timeout)
            except nats.errors.TimeoutError:
                await out.publish(await stream.finish())
                raise PermanentError(
                    "stream_timeout",
                    f"live stream {started.stream_id}: no audio for "
                    f"{self.settings.idle_timeout:g} s and no end; what was said is final",
                ) from None
            headers = msg.headers or {}
            seq = _sequence(headers.get(h.CHUNK_SEQ), last)
            if seq is None:  # a broken producer: no retry can read it another way
                await out.publish(await stream.finish())
                raise PermanentError(
                    "schema_violation",
                    f"live stream {started.stream_id}: a chunk's {h.CHUNK_SEQ} is "
                    f"{headers[h.CHUNK_SEQ][:40]!r}, not an integer; what was said is final",
                )
            if seq <= last:
                continue  # a producer's repeat (after its reconnect)
            if seq > last + 1:
                log.warning("live stream %s: chunks %d..%d never arrived", started.stream_id,
                            last + 1, seq - 1, extra={"stage": NAME,
                                                      "request_id": started.request_id})
            last = seq
            if msg.data:
                await out.publish(await stream.feed(pcm16(msg.data)))
            if headers.get(h.STREAM_END, "").lower() == "true":
                await out.publish(await stream.finish())
                return


def _sequence(raw: str | None, last: int) -> int | None:
    """A chunk's sequence number (absent: the next one); None when it is no integer."""
    if raw is None:
        return last + 1
    try:
        return int(raw)
    except ValueError:
        return None


class _Outputs:
    """A stream's updates as events, with ids that depend only on the stream's content (a
    replay after a takeover publishes the same ids, which JetStream deduplicates)."""

    def __init__(self, inbound: Inbound[LiveStart], started: LiveStart, decoder: LiveDecoder,
                 model: str) -> None:
        self.inbound = inbound
        self.started = started
        self.decoder = decoder
        self.model = model
        self.ws = inbound.workspace_id
        self._partials = 0

    async def publish(self, updates: Sequence[Update]) -> None:
        for update in updates:
            if isinstance(update, Partial):
                await self.inbound.emit(Outbound.of(
                    subjects.TRANSCRIPT_PARTIAL.for_workspace(self.ws), self._partial(update)))
            elif isinstance(update, Final):
                await self.inbound.emit(Outbound.of(
                    subjects.TRANSCRIPT_FINAL.for_workspace(self.ws), self._final(update)))

    def _partial(self, p: Partial) -> TranscriptPartial:
        self._partials += 1
        s = self.started
        rid = utterance_request_id(s.request_id, p.utterance)
        text = f"{p.committed} {p.tentative}".strip()
        return TranscriptPartial(
            event_id=derive_id(self.ws, rid, NAME, "live-partial", self._partials),
            request_id=rid, workspace_id=self.ws, session_id=s.session_id,
            segment=Segment(id=p.utterance, start=round(p.start, 3), end=round(p.end, 3),
                            text=text),
            language=self.decoder.language, committed=p.committed, tentative=p.tentative,
            stream_id=s.stream_id, utterance=p.utterance,
        )

    def _final(self, f: Final) -> TranscriptFinal:
        s = self.started
        rid = utterance_request_id(s.request_id, f.utterance)
        words = [Word(start=round(w.start, 3), end=round(w.end, 3), word=w.text,
                      probability=round(w.probability, 4)) for w in f.words]
        segment = Segment(id=0, start=round(f.start, 3), end=round(f.end, 3), text=f.text,
                          words=words if s.options.word_timestamps else None)
        return TranscriptFinal(
            event_id=derive_id(self.ws, rid, NAME, "final"), request_id=rid,
            workspace_id=self.ws, session_id=s.session_id, text=f.text,
            segments=[segment] if f.text else [], language=self.decoder.language or "en",
            language_probability=1.0, duration=round(f.end - f.start, 3), model=self.model,
            compute_seconds=round(self.decoder.take_compute_seconds(), 3),
            task=s.options.task, answer=s.options.answer, stream_id=s.stream_id,
            utterance=f.utterance,
        )

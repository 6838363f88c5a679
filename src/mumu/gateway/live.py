"""One live stream from a client into JetStream: the ``LiveStart``, then the audio as
numbered chunks (``docs/audio.md``, "Live speech"; the websocket's ``stream.start`` and the
Realtime sessions both use it).

Chunks are raw PCM16 (16 kHz mono), at most ``MAX_CHUNK_BYTES`` each, published with
``Mumu-Chunk-Seq`` from 1 and ``Mumu-Stream-End: true`` on the last. Up to ``in_flight``
chunks wait for their acknowledgement at once; the next ``write`` waits for the oldest (so a
client sending faster than JetStream takes meets TCP backpressure). A stream whose audio
passes the workspace's longest audio is ended at that length (``StreamOverError``).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import PubAck

from mumu.contracts import headers as h
from mumu.contracts import subjects
from mumu.contracts.events import LiveStart, derive_id, new_id
from mumu.contracts.options import AudioOptions
from mumu.gateway.asks import Asker
from mumu.gateway.errors import ApiError
from mumu.gateway.quota import admit_ask, enforced, give_back
from mumu.quota.errors import QuotaExceededError
from mumu.quota.gate import QuotaGate
from mumu.quota.usage import QuotaStoreError

log = logging.getLogger("mumu.gateway.live")

STAGE = "gateway"
BYTES_PER_SECOND = 32_000
"""16 kHz x 2 bytes: PCM16 mono."""
MIN_CHUNK_BYTES = 3_200
"""A chunk goes out once 100 ms of audio are pending (smaller frames are joined)."""
MAX_CHUNK_BYTES = BYTES_PER_SECOND
"""At most 1 s of audio per chunk (a larger frame is split)."""
PUBLISH_TIMEOUT = 10.0


class StreamOverError(ApiError):
    """The stream reached the workspace's longest audio: it was ended there."""


@dataclass(frozen=True, slots=True)
class StreamLimits:
    longest_audio: float
    """Seconds of audio this stream may carry: the workspace's ``longest_audio``, or what is
    left of today's ``audio_seconds_per_day`` if that is less."""
    in_flight: int
    what: str = "longest audio"
    """Which of the two ``longest_audio`` is, for the error."""


Charge = Callable[[str, float], Awaitable[None]]
"""Charges a stream's seconds to its workspace's audio of the day."""
Hold = Callable[[str], Awaitable[None]]
"""Keeps a running stream's slot in flight (``QuotaGate.hold``)."""


@dataclass(frozen=True, slots=True)
class SlotKeeper:
    """While audio flows, the stream's slot in flight is renewed every ``every`` seconds
    (a third of ``MUMU_QUOTA__INFLIGHT_TIMEOUT``), so a stream longer than that timeout
    still counts; one whose gateway died stops counting that long after its last audio."""

    hold: Hold
    every: float


class LiveOut:
    """The publishing side of one stream (see the module doc). ``write`` and ``end`` are
    called from one task at a time."""

    def __init__(self, js: JetStreamContext, start: LiveStart, limits: StreamLimits,
                 charge: Charge | None = None, slot: SlotKeeper | None = None) -> None:
        self._js = js
        self._charge = charge
        self._slot = slot
        self.start = start
        self.limits = limits
        self.subject = subjects.live_chunk(start.stream_id, start.workspace_id)
        self._pending = bytearray()
        self._seq = 0
        self._acks: collections.deque[asyncio.Future[PubAck]] = collections.deque()
        self.bytes = 0
        """Audio bytes taken (published or pending)."""
        self.ended = False
        self.over = False
        """Ended at ``limits.longest_audio``."""
        self.last_audio = time.monotonic()
        self._held_at = self.last_audio

    @property
    def request_id(self) -> str:
        return self.start.request_id

    @property
    def stream_id(self) -> str:
        return self.start.stream_id

    @property
    def seconds(self) -> float:
        return self.bytes / BYTES_PER_SECOND

    async def write(self, pcm: bytes) -> None:
        """Take 16 kHz PCM16 audio; raises ``StreamOverError`` (the stream ended) when it
        passes the longest audio. Nothing is taken once the stream ended."""
        if self.ended:
            return
        self.last_audio = time.monotonic()
        if self._slot is not None and self.last_audio - self._held_at >= self._slot.every:
            self._held_at = self.last_audio
            await self._slot.hold(self.request_id)
        # no limit (quotas off) is infinite room: int() only of a finite one
        room = self.limits.longest_audio * BYTES_PER_SECOND - self.bytes
        over = self.over = len(pcm) > room
        if over:
            whole = int(room)
            pcm = pcm[:max(0, whole - whole % 2)]
        self.bytes += len(pcm)
        self._pending.extend(pcm)
        while len(self._pending) >= MIN_CHUNK_BYTES:
            usable = min(len(self._pending), MAX_CHUNK_BYTES)
            usable -= usable % 2  # never split a sample
            chunk = bytes(self._pending[:usable])
            del self._pending[:usable]
            await self._chunk(chunk, last=False)
        if over:
            await self.end()
            raise StreamOverError(
                413, "too_long",
                f"the stream reached this workspace's {self.limits.what} "
                f"({self.limits.longest_audio:g} s): it was ended there and what was said "
                "is final", request_id=self.request_id)

    async def end(self) -> None:
        """The last chunk (what is pending, maybe nothing) with ``Mumu-Stream-End``; waits
        until JetStream has every chunk."""
        if self.ended:
            return
        self.ended = True
        chunk, self._pending = bytes(self._pending), bytearray()
        try:
            await self._chunk(chunk, last=True)
            while self._acks:
                await self._settle(self._acks.popleft())
        except ApiError:
            await self.abandon()
            raise
        if self._charge is not None and self.bytes:
            # ended at its limit: all of it (the cut to whole samples leaves a few µs)
            used = self.limits.longest_audio if self.over else self.seconds
            await self._charge(self.request_id, used)

    async def _chunk(self, data: bytes, *, last: bool) -> None:
        if self.ended and not last:  # ended meanwhile (a timeout while this write waited)
            return
        while len(self._acks) >= self.limits.in_flight:
            await self._settle(self._acks.popleft())
        self._seq += 1
        headers = {h.CHUNK_SEQ: str(self._seq), h.MSG_ID: f"{self.stream_id}.{self._seq}"}
        if last:
            headers[h.STREAM_END] = "true"
        try:
            ack = await self._js.publish_async(
                self.subject, data, headers=headers, wait_stall=PUBLISH_TIMEOUT)
        except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
            raise _unavailable(self.subject, exc) from exc
        self._acks.append(ack)

    async def _settle(self, ack: asyncio.Future[PubAck]) -> None:
        try:
            await asyncio.wait_for(ack, PUBLISH_TIMEOUT)
        except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
            raise _unavailable(self.subject, exc) from exc

    async def abandon(self) -> None:
        """The stream's end could not be published: forget what waits for acks."""
        self.ended = True
        for ack in self._acks:
            ack.cancel()
        self._acks.clear()


def _unavailable(subject: str, exc: BaseException) -> ApiError:
    log.warning("live chunk on %s not stored: %r", subject, exc)
    return ApiError(503, "unavailable", "the message bus did not store the audio; the "
                    "stream is ended: start a new one", headers={"Retry-After": "2"})


class LiveIngest:
    """Opens live streams for this gateway process (one JetStream context, whose
    asynchronous publishes all streams share)."""

    def __init__(self, nc: NatsClient, asker: Asker, in_flight: int) -> None:
        self._js = nc.jetstream()
        self._asker = asker
        self._in_flight = in_flight

    async def open(self, workspace_id: str, session_id: str, options: AudioOptions,
                   request_id: str | None = None) -> LiveOut:
        """Admit a new stream as an ask (asks per minute, a slot in flight, any of today's
        audio left; else 429 ``quota_exceeded``) and publish its ``LiveStart``. The slot is
        held until the stream is over: ingest frees it at the stage's ``LiveEnded``."""
        gate = self._asker.quota
        limits = StreamLimits(float("inf"), self._in_flight)
        charge: Charge | None = None
        request_id = request_id or new_id()
        took = await admit_ask(gate, workspace_id, request_id, audio=True)
        slot: SlotKeeper | None = None
        try:
            if gate is not None and gate.enabled:
                limits = await enforced(self._limits(gate, workspace_id))

                async def charge(request_id: str, seconds: float) -> None:
                    await _charge(gate, workspace_id, request_id, seconds)

                async def hold(request_id: str) -> None:
                    try:
                        await gate.hold(workspace_id, request_id)
                    except QuotaStoreError as exc:  # kept at the next renewal, or ages out
                        log.warning("live stream %s: slot not renewed: %s", request_id, exc)
                slot = SlotKeeper(hold, gate.settings.inflight_timeout / 3)
            stream_id = new_id()
            start = LiveStart(
                event_id=derive_id(workspace_id, request_id, STAGE, "live"),
                request_id=request_id, workspace_id=workspace_id, session_id=session_id,
                stream_id=stream_id, options=options)
            await self._asker.publish(
                workspace_id, subjects.INGEST_LIVE.for_workspace(workspace_id),
                start.model_dump_json().encode(), {h.MSG_ID: start.event_id})
        except BaseException:
            if took:  # not started after all
                await give_back(gate, workspace_id, request_id)
            raise
        log.info("live stream %s started", stream_id,
                 extra={"request_id": request_id, "stage": STAGE})
        return LiveOut(self._js, start, limits, charge, slot)

    async def _limits(self, gate: QuotaGate, workspace_id: str) -> StreamLimits:
        quota = await gate.limits.get(workspace_id)
        used = (await (await gate.usage()).audio_day(workspace_id, time.time())).seconds
        left = quota.audio_seconds_per_day - used
        if left < quota.longest_audio:
            return StreamLimits(left, self._in_flight, "audio left today")
        return StreamLimits(quota.longest_audio, self._in_flight)


async def _charge(gate: QuotaGate, workspace_id: str, request_id: str, seconds: float) -> None:
    """After the stream: its seconds count against today's audio (a race with another
    stream may pass the quota by what they streamed at once; that is logged, not refused:
    the audio was transcribed already)."""
    try:
        limits = await gate.limits.get(workspace_id)
        await (await gate.usage()).charge_audio(workspace_id, request_id, seconds, limits,
                                                time.time())
    except (QuotaExceededError, QuotaStoreError) as exc:
        log.warning("live stream %s: %.1f s not charged: %s", request_id, seconds, exc)

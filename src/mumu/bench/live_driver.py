"""How `mumu bench live` (and the live tests) talk to mumu: one small interface, so the
measurements do not depend on the way in. Two drivers: the websocket of a real gateway
(``live_ws.WsLiveDriver``: `stream.start` / frames / `stream.end`, uploads by
``POST /api/ask``) and the NATS producer subjects (``NatsLiveDriver``, here).

``LiveDriver.open`` starts a stream; the ``LiveStreamHandle`` sends PCM16 chunks and the
end. ``LiveDriver.upload`` sends a whole recording the upload way. What comes back
(partials, finals, answer deltas and finals, errors) reaches the ``on_event`` given to the
driver as ``(kind, body, monotonic arrival time)``; ``release`` lets go of what a session's
results came by once they are in.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from mumu.contracts import headers as h
from mumu.contracts import subjects
from mumu.contracts.events import LiveStart
from mumu.contracts.options import AudioOptions

OnEvent = Callable[[str, dict[str, Any], float], None]
"""(kind: "partial" | "final" | "delta" | "answer" | "error", event body, arrival)."""


class LiveStreamHandle(Protocol):
    request_id: str
    """The stream's request id; utterance n's is ``<request_id>-<n>``."""

    async def send(self, pcm: bytes) -> None: ...

    async def end(self, pcm: bytes = b"") -> None:
        """The last chunk (push-to-talk: the user let go)."""
        ...


@dataclass(frozen=True)
class Uploaded:
    request_id: str
    sent: float
    """Monotonic time the upload began (before its first byte went out)."""


class LiveDriver(Protocol):
    name: str
    """What the result file records as the driver."""

    async def open(self, session_id: str, options: AudioOptions) -> LiveStreamHandle: ...

    async def upload(self, session_id: str, audio: bytes, options: AudioOptions
                     ) -> Uploaded:
        """A whole wav recording, the upload way (its results come to ``on_event``)."""
        ...

    async def release(self, session_id: str) -> None:
        """The session's results are in: let go of what carries them."""
        ...

    async def close(self) -> None: ...


_KINDS = {
    subjects.TRANSCRIPT_PARTIAL.prefix: "partial",
    subjects.TRANSCRIPT_FINAL.prefix: "final",
    subjects.STREAM_ENDED.prefix: "ended",
    subjects.ANSWER_DELTA.prefix: "delta",
    subjects.ANSWER_FINAL.prefix: "answer",
    subjects.ERROR.prefix: "error",
}


class NatsStream:
    """A stream on the producer subjects: a ``LiveStart``, then numbered chunks."""

    def __init__(self, nc: NATS, workspace_id: str, stream_id: str, request_id: str) -> None:
        self.nc = nc
        self.ws = workspace_id
        self.stream_id = stream_id
        self.request_id = request_id
        self.seq = 0

    async def send(self, pcm: bytes) -> None:
        await self._chunk(pcm, last=False)

    async def end(self, pcm: bytes = b"") -> None:
        await self._chunk(pcm, last=True)

    async def _chunk(self, pcm: bytes, *, last: bool) -> None:
        self.seq += 1
        headers = {h.CHUNK_SEQ: str(self.seq), h.MSG_ID: f"{self.stream_id}.{self.seq}"}
        if last:
            headers[h.STREAM_END] = "true"
        await self.nc.jetstream().publish(
            subjects.live_chunk(self.stream_id, self.ws), pcm, headers=headers)


class NatsLiveDriver:
    """Live streams over NATS producer subjects, uploads on ``mumu.ingest.audio``; results
    from core NATS subscriptions on the workspace's transcript, answer and error subjects
    (what a workspace producer's credentials allow)."""

    name = "nats"

    def __init__(self, nc: NATS, workspace_id: str, on_event: OnEvent) -> None:
        self.nc = nc
        self.ws = workspace_id
        self.on_event = on_event
        self._subs: list[Any] = []

    async def start(self) -> None:
        async def on_msg(msg: Msg) -> None:
            at = time.monotonic()
            kind = next((k for p, k in _KINDS.items() if msg.subject.startswith(p)), None)
            if kind is not None:
                self.on_event(kind, json.loads(msg.data), at)

        for pattern in (subjects.TRANSCRIPT_PARTIAL, subjects.TRANSCRIPT_FINAL,
                        subjects.STREAM_ENDED, subjects.ANSWER_DELTA, subjects.ANSWER_FINAL,
                        subjects.ERROR):
            self._subs.append(await self.nc.subscribe(pattern.for_workspace(self.ws), cb=on_msg))
        await self.nc.flush()

    async def open(self, session_id: str, options: AudioOptions) -> NatsStream:
        stream_id = uuid.uuid4().hex
        request_id = f"live{stream_id[:16]}"
        start = LiveStart(event_id=str(uuid.uuid4()), request_id=request_id,
                          workspace_id=self.ws, session_id=session_id, stream_id=stream_id,
                          options=options)
        await self.nc.jetstream().publish(
            subjects.INGEST_LIVE.for_workspace(self.ws), start.model_dump_json().encode(),
            headers={h.MSG_ID: start.event_id})
        return NatsStream(self.nc, self.ws, stream_id, request_id)

    async def upload(self, session_id: str, audio: bytes, options: AudioOptions
                     ) -> Uploaded:
        rid = uuid.uuid4().hex
        headers = {h.CONTENT_TYPE: "audio/wav", h.SESSION: session_id, h.REQUEST_ID: rid,
                   h.MSG_ID: rid}
        if options.language:
            headers[h.LANGUAGE] = options.language
        sent = time.monotonic()
        await self.nc.jetstream().publish(
            subjects.INGEST_AUDIO.for_workspace(self.ws), audio, headers=headers)
        return Uploaded(rid, sent)

    async def release(self, session_id: str) -> None:
        """Nothing per session: the subscriptions are the workspace's."""

    async def close(self) -> None:
        for sub in self._subs:
            await sub.unsubscribe()
        self._subs.clear()

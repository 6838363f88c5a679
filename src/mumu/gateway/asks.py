"""Turning a client's question into events on NatsClient: text asks, audio asks, cancellation."""

from __future__ import annotations

import logging

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js.api import ObjectMeta

from mumu.contracts import headers as h
from mumu.contracts import subjects
from mumu.contracts.events import CancelRequest, IngestAudioHeaders, TextAsk, derive_id, new_id
from mumu.contracts.options import AudioOptions
from mumu.gateway.errors import ApiError

log = logging.getLogger("mumu.gateway.asks")

STAGE = "gateway"
PUBLISH_TIMEOUT = 10.0
HEADER_ROOM = 4096
"""Bytes kept free for headers when deciding whether audio fits in one message."""

FORMATS = {
    "wav": "audio/wav",
    "wave": "audio/wav",
    "flac": "audio/flac",
    "ogg": "audio/ogg",
    "opus": "audio/ogg",
    "oga": "audio/ogg",
    "mp3": "audio/mpeg",
    "mpeg": "audio/mpeg",
    "mpga": "audio/mpeg",
    "webm": "audio/webm",
    "m4a": "audio/mp4",
    "mp4": "audio/mp4",
}


_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"fLaC", "audio/flac"),
    (0, b"OggS", "audio/ogg"),
    (0, b"\x1a\x45\xdf\xa3", "audio/webm"),
    (4, b"ftyp", "audio/mp4"),
    (0, b"ID3", "audio/mpeg"),
)


def sniff(data: bytes) -> str | None:
    """The audio content type from the file's magic bytes, or None if not a known format."""
    head = data[:16]
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/wav"
    for offset, magic, content_type in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return content_type
    if len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:  # MPEG frame sync
        return "audio/mpeg"
    return None


def audio_content_type(data: bytes, declared: str | None = None) -> str:
    """What the bytes are; 400 when empty, 415 when not audio mumu can decode."""
    if not data:
        raise ApiError(400, "empty_audio", "the audio is empty")
    found = sniff(data)
    if found is None:
        hint = f" (declared {declared})" if declared else ""
        raise ApiError(
            415, "unsupported_audio",
            f"not a supported audio file{hint}: send wav, flac, ogg/opus, mp3, webm or m4a",
        )
    return found


class Asker:
    """Publishes asks for one gateway process, waiting for JetStream's acknowledgement."""

    def __init__(self, nc: NatsClient) -> None:
        self._nc = nc
        self._js = nc.jetstream()

    async def _publish(self, subject: str, payload: bytes, headers: dict[str, str]) -> None:
        try:
            await self._js.publish(subject, payload, headers=headers, timeout=PUBLISH_TIMEOUT)
        except nats.js.errors.APIError as exc:
            # work streams discard new: a full stream refuses instead of evicting work
            log.warning("publish to %s refused: %r", subject, exc)
            raise ApiError(
                503, "overloaded", f"the request queue refused the ask ({exc.description}); "
                "retry later", headers={"Retry-After": "5"},
            ) from exc
        except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
            log.warning("publish to %s failed: %r", subject, exc)
            raise ApiError(503, "unavailable", "the message bus is not reachable; retry") from exc

    async def ask_text(
        self, workspace_id: str, session_id: str, text: str, language: str | None = None
    ) -> str:
        request_id = new_id()
        event = TextAsk(
            event_id=derive_id(workspace_id, request_id, STAGE, "text"), request_id=request_id,
            workspace_id=workspace_id, session_id=session_id, text=text, language=language,
        )
        await self._publish(
            subjects.INGEST_TEXT.for_workspace(workspace_id),
            event.model_dump_json().encode(),
            {h.MSG_ID: event.event_id},
        )
        log.info("text ask", extra={"request_id": request_id, "stage": STAGE})
        return request_id

    async def ask_audio(
        self, workspace_id: str, session_id: str, audio: bytes, content_type: str,
        options: AudioOptions | None = None,
    ) -> str:
        """Raw audio on ``mumu.ingest.audio.<ws>``; over the payload limit via the Object Store."""
        request_id = new_id()
        body, audio_object = audio, None
        if len(audio) + HEADER_ROOM > self._nc.max_payload:
            name = f"{workspace_id}/{request_id}"
            try:
                store = await self._js.object_store(subjects.BUCKET_AUDIO)
                await store.put(name, audio, meta=ObjectMeta(name=name))
            except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
                log.warning("object store put failed: %r", exc)
                raise ApiError(503, "unavailable", "the audio store is not reachable") from exc
            audio_object, body = name, b""
        headers = IngestAudioHeaders(
            content_type=content_type, session_id=session_id, request_id=request_id,
            audio_object=audio_object, **(options or AudioOptions()).model_dump(),
        ).to_headers()
        headers[h.MSG_ID] = derive_id(workspace_id, request_id, STAGE, "audio")
        await self._publish(subjects.INGEST_AUDIO.for_workspace(workspace_id), body, headers)
        log.info(
            "audio ask (%d bytes, %s)", len(audio), content_type,
            extra={"request_id": request_id, "stage": STAGE},
        )
        return request_id

    async def cancel(self, workspace_id: str, session_id: str, request_id: str) -> None:
        event = CancelRequest(
            event_id=derive_id(workspace_id, request_id, STAGE, "cancel"), request_id=request_id,
            workspace_id=workspace_id, session_id=session_id,
        )
        await self._publish(
            subjects.CONTROL_CANCEL.for_workspace(workspace_id),
            event.model_dump_json().encode(),
            {h.MSG_ID: event.event_id},
        )

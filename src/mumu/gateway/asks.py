"""Turning a client's question into events on NatsClient: text asks, audio asks, cancellation."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js.api import ObjectMeta, PubAck

from mumu.broker.jsapi import stream_config
from mumu.broker.settings import NatsSettings
from mumu.broker.workspaces import ensure_configured
from mumu.contracts import audio_formats, subjects
from mumu.contracts import headers as h
from mumu.contracts.events import CancelRequest, IngestAudioHeaders, TextAsk, derive_id, new_id
from mumu.contracts.options import AudioOptions
from mumu.gateway.errors import ApiError
from mumu.gateway.quota import admit_ask, give_back
from mumu.gateway.telemetry import Milestones, traced_ask
from mumu.quota.gate import QuotaGate
from mumu.runtime.tracing import Tracing

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


def sniff(data: bytes) -> str | None:
    """The content type of ``data``'s container if it is whitelisted (the same whitelist
    ingest decodes with), else None."""
    found = audio_formats.sniff(data)
    return found.content_type if found is not None else None


def audio_content_type(data: bytes, declared: str | None = None) -> str:
    """What the bytes are; 400 when empty, 415 when not audio mumu can decode."""
    if not data:
        raise ApiError(400, "empty_audio", "the audio is empty")
    found = sniff(data)
    if found is None:
        hint = f" (declared {declared})" if declared else ""
        raise ApiError(
            415, "unsupported_audio",
            f"not a supported audio file{hint}: send {audio_formats.NAMES}",
        )
    return found


def _is_ingest(subject: str) -> bool:
    return (subjects.INGEST_TEXT.matches(subject) or subjects.INGEST_AUDIO.matches(subject)
            or subjects.INGEST_LIVE.matches(subject))


@dataclass(frozen=True, slots=True)
class Asked:
    """A published ask: its request id, and whether JetStream had it already
    (``duplicate``: the same request id within the dedupe window; nothing new was queued,
    the caller gets the existing request)."""

    request_id: str
    duplicate: bool = False


class Asker:
    """Publishes asks for one gateway process, waiting for JetStream's acknowledgement.

    A workspace made before intake streams existed (or whose stream was lost) has no
    stream for ``mumu.ingest.*.<ws>``. The asker's caller holds a valid token for that
    workspace, so the asker creates its intake stream and upload bucket: checked on the
    first ask of each workspace in this process (a core subscriber on the subject would
    turn a publish without a stream into a timeout, not "no responders"), and again when a
    publish finds no stream (it was removed since), then it tries once more.
    """

    def __init__(
        self, nc: NatsClient, limits: NatsSettings | None = None,
        quota: QuotaGate | None = None, *,
        tracing: Tracing | None = None, milestones: Milestones | None = None,
    ) -> None:
        """``quota``: the workspace quotas every ask is admitted by first (429);
        ``tracing``: starts each ask's trace; ``milestones``: the end-to-end latency of the
        asks this gateway accepts."""
        self._tracing = tracing or Tracing("gateway", None)
        self._milestones = milestones
        self._nc = nc
        self._quota = quota
        self._js = nc.jetstream()
        self._limits = limits or NatsSettings()
        self._ready: set[str] = set()
        """Workspaces whose intake stream this process has seen."""

    async def _ensure(self, workspace_id: str, why: BaseException) -> None:
        log.info("workspace %s has no intake stream or bucket (%r): creating them",
                 workspace_id, why)
        try:
            await ensure_configured(self._nc, self._limits, [workspace_id])
        except (nats.errors.Error, nats.js.errors.Error, TimeoutError, RuntimeError) as exc:
            log.warning("creating the intake of %s failed: %r", workspace_id, exc)
            raise ApiError(503, "unavailable", "the request queue is not reachable; retry",
                           headers={"Retry-After": "5"}) from exc

    async def _intake(self, workspace_id: str) -> None:
        """Once per workspace: is its intake stream among ``MUMU_INGEST``'s sources (a
        lookup the gateway's NATS user may make; the intake stream's own info it may not)?"""
        if workspace_id in self._ready:
            return
        try:
            ingest = await stream_config(self._nc, subjects.STREAM_INGEST)
        except (nats.errors.Error, TimeoutError) as exc:
            raise ApiError(503, "unavailable", "the message bus is not reachable; retry") from exc
        sourced = {s.get("name") for s in (ingest or {}).get("sources") or []}
        if subjects.intake_stream(workspace_id) not in sourced:
            await self._ensure(workspace_id, LookupError("not a source of MUMU_INGEST"))
        self._ready.add(workspace_id)

    async def _publish(
        self, workspace_id: str, subject: str, payload: bytes, headers: dict[str, str]
    ) -> PubAck:
        if _is_ingest(subject):
            await self._intake(workspace_id)
        try:
            try:
                return await self._js.publish(
                    subject, payload, headers=headers, timeout=PUBLISH_TIMEOUT)
            except nats.js.errors.NoStreamResponseError as exc:
                if not _is_ingest(subject):
                    raise
                await self._ensure(workspace_id, exc)
                return await self._js.publish(
                    subject, payload, headers=headers, timeout=PUBLISH_TIMEOUT)
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

    async def publish(self, workspace_id: str, subject: str, payload: bytes,
                      headers: dict[str, str]) -> PubAck:
        """Publish one message of ``workspace_id`` (its intake ensured for an ingest
        subject), JetStream's acknowledgement awaited; failures are ``ApiError`` (503)."""
        return await self._publish(workspace_id, subject, payload, headers)

    @property
    def quota(self) -> QuotaGate | None:
        """The workspace quotas asks are admitted by (None: not enforced here)."""
        return self._quota

    def _accepted(self, asked: Asked, kind: str, *, answer: bool = True) -> Asked:
        """A new request (not a duplicate) starts its end-to-end clock."""
        if self._milestones is not None and not asked.duplicate:
            self._milestones.accepted(asked.request_id, kind, answer=answer)
        return asked

    def _asked(self, request_id: str, ack: PubAck, kind: str) -> Asked:
        asked = Asked(request_id, bool(ack.duplicate))
        if asked.duplicate:
            log.info("%s ask is a duplicate of request %s (stream seq %d): the existing "
                     "request stands", kind, request_id, ack.seq,
                     extra={"request_id": request_id, "stage": STAGE})
        else:
            log.info("%s ask", kind, extra={"request_id": request_id, "stage": STAGE})
        return asked

    async def ask_text(
        self, workspace_id: str, session_id: str, text: str, language: str | None = None,
        request_id: str | None = None,
    ) -> Asked:
        """``request_id``: the client's own id; asking again with it within the dedupe
        window returns the existing request (``Asked.duplicate``)."""
        request_id = request_id or new_id()
        event = TextAsk(
            event_id=derive_id(workspace_id, request_id, STAGE, "text"), request_id=request_id,
            workspace_id=workspace_id, session_id=session_id, text=text, language=language,
        )
        took = await admit_ask(self._quota, workspace_id, request_id, audio=False)
        with traced_ask(self._tracing, "text", workspace_id, request_id) as trace:
            try:
                ack = await self._publish(
                    workspace_id, subjects.INGEST_TEXT.for_workspace(workspace_id),
                    event.model_dump_json().encode(), {h.MSG_ID: event.event_id, **trace},
                )
            except ApiError:
                if took:
                    await give_back(self._quota, workspace_id, request_id)
                raise
            asked = await self._settled(workspace_id, self._asked(request_id, ack, "text"), took)
            return self._accepted(asked, "text")

    async def _settled(self, workspace_id: str, asked: Asked, took: bool) -> Asked:
        """A duplicate starts no request: a slot it took (the first one ended) is freed."""
        if asked.duplicate and took:
            await give_back(self._quota, workspace_id, asked.request_id)
        return asked

    async def _upload(self, workspace_id: str, name: str, audio: bytes) -> None:
        """Audio over the payload limit: into the workspace's upload bucket."""
        bucket = subjects.upload_bucket(workspace_id)
        try:
            await self._intake(workspace_id)
            try:
                store = await self._js.object_store(bucket)
            except nats.js.errors.BucketNotFoundError as exc:
                await self._ensure(workspace_id, exc)
                store = await self._js.object_store(bucket)
            await store.put(name, audio, meta=ObjectMeta(name=name))
        except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
            log.warning("object store put failed: %r", exc)
            raise ApiError(503, "unavailable", "the audio store is not reachable") from exc

    async def _discard_upload(self, workspace_id: str, name: str) -> None:
        """A duplicate ask's own upload is not needed: the existing request has its own."""
        try:
            store = await self._js.object_store(subjects.upload_bucket(workspace_id))
            await store.delete(name)
        except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
            log.warning("could not delete the unused upload %s: %r (the bucket's TTL will)",
                        name, exc)

    async def ask_audio(
        self, workspace_id: str, session_id: str, audio: bytes, content_type: str,
        options: AudioOptions | None = None, *, request_id: str | None = None,
    ) -> Asked:
        """Raw audio on ``mumu.ingest.audio.<ws>``; over the payload limit via the
        workspace's upload bucket (``mumu-upload-<ws>``)."""
        request_id = request_id or new_id()
        options = options or AudioOptions()
        took = await admit_ask(self._quota, workspace_id, request_id, audio=True)
        with traced_ask(self._tracing, "audio", workspace_id, request_id) as trace:
            try:
                asked = await self._ask_audio(
                    workspace_id, session_id, audio, content_type=content_type,
                    options=options, request_id=request_id, trace=trace)
            except ApiError:
                if took:
                    await give_back(self._quota, workspace_id, request_id)
                raise
            asked = await self._settled(workspace_id, asked, took)
            return self._accepted(asked, "audio", answer=options.answer)

    async def _ask_audio(
        self, workspace_id: str, session_id: str, audio: bytes, *, content_type: str,
        options: AudioOptions, request_id: str, trace: dict[str, str],
    ) -> Asked:
        body, audio_object = audio, None
        if len(audio) + HEADER_ROOM > self._nc.max_payload:
            # a name of its own: a duplicate ask must not overwrite the first one's upload
            audio_object, body = f"{request_id}.{new_id()}", b""
            await self._upload(workspace_id, audio_object, audio)
        headers = IngestAudioHeaders(
            content_type=content_type, session_id=session_id, request_id=request_id,
            audio_object=audio_object, **options.model_dump(),
        ).to_headers()
        headers[h.MSG_ID] = derive_id(workspace_id, request_id, STAGE, "audio")
        headers.update(trace)
        ack = await self._publish(
            workspace_id, subjects.INGEST_AUDIO.for_workspace(workspace_id), body, headers)
        asked = self._asked(request_id, ack, f"audio ({len(audio)} bytes, {content_type})")
        if asked.duplicate and audio_object is not None:
            await self._discard_upload(workspace_id, audio_object)
        return asked

    async def cancel(self, workspace_id: str, session_id: str, request_id: str) -> None:
        event = CancelRequest(
            event_id=derive_id(workspace_id, request_id, STAGE, "cancel"), request_id=request_id,
            workspace_id=workspace_id, session_id=session_id,
        )
        await self._publish(
            workspace_id, subjects.CONTROL_CANCEL.for_workspace(workspace_id),
            event.model_dump_json().encode(),
            {h.MSG_ID: event.event_id},
        )

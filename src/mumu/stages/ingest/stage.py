"""The ingest stage: producer audio → normalised 16 kHz mono WAV in the Object Store.

Consumes ``mumu.ingest.audio.<ws>`` (raw bytes with headers, or headers naming an
object a producer uploaded to its workspace's bucket ``mumu-upload-<ws>``), decodes with
PyAV in a thread pool, validates, stores ``.norm/<ws>/<request id>.wav`` in the
workspace's ``mumu-audio-<ws>`` (its size bounds the workspace's audio awaiting
transcription: docs/reliability.md) and publishes ``mumu.audio.ready.<ws>``. The upload
bucket is the one of the workspace of the message's *subject*, so no workspace can make
ingest read another's upload; the upload is deleted once the message is acked (a
dead-lettered one keeps it for a replay, until the bucket's TTL).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.object_store import ObjectStore

from mumu.contracts import subjects
from mumu.contracts.consumers import INGEST_AUDIO
from mumu.contracts.events import AudioReady, IngestAudioHeaders, derive_id
from mumu.contracts.ids import is_id
from mumu.db.owned_pool import OwnedPool
from mumu.quota.gate import QuotaGate
from mumu.runtime import Inbound, Outbound, PermanentError, Route, StageContext, TransientError
from mumu.settings import Settings
from mumu.stages.ingest.decode import SAMPLE_RATE, AudioRejectedError, Decoded, Limits, decode
from mumu.stages.ingest.quota import IngestQuota
from mumu.stages.ingest.request import check_object_name, parse_headers
from mumu.stages.ingest.settings import IngestSettings
from mumu.stages.ingest.workspaces import WorkspaceGate

log = logging.getLogger(__name__)

NAME = "ingest"


NORMALISED_PREFIX = ".norm/"
"""Where ingest keeps normalised audio. A workspace token never contains ``.``, so no
producer upload (which must start with ``<workspace>/``) can ever name one of these."""


def normalised_object(workspace_id: str, request_id: str) -> str:
    return f"{NORMALISED_PREFIX}{workspace_id}/{request_id}.wav"


class IngestStage:
    name = NAME

    def __init__(
        self, settings: IngestSettings, workspaces: WorkspaceGate,
        store: ObjectStore | None = None, quota: QuotaGate | None = None,
    ) -> None:
        """``store``: the Object Store of normalised audio for every workspace (``None``:
        each workspace's ``mumu-audio-<ws>``, opened per use); ``quota``: the workspace
        quotas (``None``: none)."""
        self.settings = settings
        self.limits = Limits(
            max_duration=settings.max_duration,
            min_duration=settings.min_duration,
            silence_dbfs=settings.silence_dbfs,
        )
        self.workspaces = workspaces
        self._executor: ThreadPoolExecutor | None = None
        self._given_store = store
        self._js: JetStreamContext | None = None
        self.quota = IngestQuota(quota) if quota is not None else None

    def routes(self) -> Sequence[Route]:
        routes = [
            Route(subjects.STREAM_INGEST, (subjects.INGEST_AUDIO.wildcard,), self.handle,
                  model=None, durable=INGEST_AUDIO.durable, after_ack=self.delete_upload)
        ]
        if self.quota is not None:
            routes.append(self.quota.route())
        return routes

    async def start(self, ctx: StageContext) -> None:
        self._js = ctx.js
        if self.quota is not None:
            self.quota.gate.bind(ctx.js)
        # opened on every start: after a reconnect, a handle of the old connection is dead
        await self.workspaces.open()
        self._executor = ThreadPoolExecutor(
            max_workers=self.settings.decode_workers, thread_name_prefix="mumu-decode"
        )

    async def stop(self) -> None:
        if self._executor is not None:
            executor, self._executor = self._executor, None
            # waits for a decode in progress: in a thread, so the loop keeps serving
            await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)
        await self.workspaces.close()

    async def handle(self, inbound: Inbound[Any]) -> Sequence[Outbound]:
        ws = inbound.workspace_id
        if not is_id(ws):
            raise PermanentError("schema_violation", f"invalid workspace token {ws!r}")
        hdrs = parse_headers(inbound.headers)
        await self.workspaces.check(ws)
        if self.quota is not None:  # before any work: asks per minute, requests in flight
            await self.quota.admit(ws, hdrs.request_id)
        data = await self._audio_bytes(inbound, hdrs)
        decoded = await self._decode(data)
        if self.quota is not None:  # what only the decode tells: how long the audio is
            await self.quota.audio(ws, hdrs.request_id, decoded.duration)
        name = normalised_object(ws, hdrs.request_id)
        await self._put(ws, name, decoded)
        ready = AudioReady(
            event_id=derive_id(ws, hdrs.request_id, NAME),
            request_id=hdrs.request_id,
            workspace_id=ws,
            session_id=hdrs.session_id,
            object_name=name,
            duration=round(decoded.duration, 3),
            sample_rate=SAMPLE_RATE,
            source_content_type=hdrs.content_type,
            options=hdrs.options(),
        )
        log.info(
            "audio ready: %.2f s from %s (%s, %d Hz, %d ch)", decoded.duration,
            hdrs.content_type, decoded.source_format, decoded.source_rate,
            decoded.source_channels,
            extra={"stage": NAME, "request_id": hdrs.request_id, "subject": inbound.subject,
                   "seq": inbound.sequence},
        )
        return [Outbound.of(subjects.AUDIO_READY.for_workspace(ws), ready)]

    async def _audio_bytes(self, inbound: Inbound[Any], hdrs: IngestAudioHeaders) -> bytes:
        limit = self.settings.max_bytes
        if hdrs.audio_object is None:
            if len(inbound.data) > limit:
                raise PermanentError(
                    "too_large", f"the audio is {len(inbound.data)} bytes (limit {limit})"
                )
            return inbound.data
        if inbound.data:
            raise PermanentError(
                "schema_violation", "a message with Mumu-Audio-Object must have an empty body"
            )
        check_object_name(hdrs.audio_object)
        bucket = subjects.upload_bucket(inbound.workspace_id)
        store = await self._uploads(inbound.workspace_id)
        try:
            info = await store.get_info(hdrs.audio_object)
            if info.size is not None and info.size > limit:
                raise PermanentError(
                    "too_large", f"object {hdrs.audio_object} is {info.size} bytes (limit {limit})"
                )
            result = await store.get(hdrs.audio_object)
        except nats.js.errors.ObjectNotFoundError as exc:
            raise PermanentError(
                "unsupported_audio",
                f"object {hdrs.audio_object!r} is not in bucket {bucket}, the upload bucket "
                f"of workspace {inbound.workspace_id} (never uploaded, deleted or expired)",
            ) from exc
        except nats.js.errors.ObjectDeletedError as exc:
            raise PermanentError(
                "unsupported_audio", f"object {hdrs.audio_object!r} was deleted from {bucket}"
            ) from exc
        except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
            raise TransientError("internal", f"reading {hdrs.audio_object}: {exc!r}") from exc
        return result.data or b""

    async def _uploads(self, workspace_id: str) -> ObjectStore:
        """The upload bucket of ``workspace_id`` (opened per use: one API call, small next
        to a decode, and a bucket created meanwhile is found)."""
        if self._js is None:
            raise RuntimeError("ingest stage used before start()")
        bucket = subjects.upload_bucket(workspace_id)
        try:
            return await self._js.object_store(bucket)
        except nats.js.errors.BucketNotFoundError as exc:
            raise PermanentError(
                "unsupported_audio",
                f"workspace {workspace_id} has no upload bucket {bucket} "
                "(`mumu workspace create` makes it)",
            ) from exc
        except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
            raise TransientError("internal", f"opening {bucket}: {exc!r}") from exc

    async def delete_upload(self, inbound: Inbound[Any]) -> None:
        """After the ack: the producer's upload is normalised and stored; delete it."""
        name = parse_headers(inbound.headers).audio_object
        if name is None:
            return
        store = await self._uploads(inbound.workspace_id)
        await store.delete(name)
        log.info("upload %s deleted from %s", name, subjects.upload_bucket(inbound.workspace_id),
                 extra={"stage": NAME, "request_id": inbound.request_id,
                        "subject": inbound.subject, "seq": inbound.sequence})

    async def _decode(self, data: bytes) -> Decoded:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, decode, data, self.limits)
        except AudioRejectedError as exc:
            raise PermanentError(exc.code, exc.message) from exc

    async def _put(self, workspace_id: str, name: str, decoded: Decoded) -> None:
        store = self._given_store or await self._audio(workspace_id)
        loop = asyncio.get_running_loop()
        wav = await loop.run_in_executor(self._executor, decoded.wav_bytes)
        try:
            await store.put(name, wav)
        except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
            # a full mumu-audio-<ws> is this workspace's limit ("maximum bytes exceeded")
            detail = str(exc) if isinstance(exc, nats.js.errors.APIError) else repr(exc)
            raise TransientError("internal", f"storing {name}: {detail}") from exc

    async def _audio(self, workspace_id: str) -> ObjectStore:
        """The workspace's normalised-audio bucket ``mumu-audio-<ws>`` (opened per use,
        like the upload bucket), whose size bounds what it holds until transcribed."""
        if self._js is None:
            raise RuntimeError("ingest stage used before start()")
        bucket = subjects.audio_bucket(workspace_id)
        try:
            return await self._js.object_store(bucket)
        except nats.js.errors.BucketNotFoundError as exc:
            raise TransientError(
                "internal", f"workspace {workspace_id} has no audio bucket {bucket} "
                "(`mumu streams apply` or `mumu workspace create` makes it)",
            ) from exc
        except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
            raise TransientError("internal", f"opening {bucket}: {exc!r}") from exc


def build_stage(settings: Settings) -> IngestStage:
    pool = OwnedPool.app(settings.database, min_size=1, max_size=4, owner="the ingest stage")
    gate = WorkspaceGate(pool, settings.ingest.workspace_cache_seconds)
    quota = QuotaGate(settings.quota, pool.get if pool.configured else None)
    return IngestStage(settings.ingest, gate, quota=quota)

"""The transcribe stage: ``mumu.audio.ready.<ws>`` → partial segments and the final transcript.

The model is loaded in ``start`` (before the stage reports ready) and runs in a dedicated
thread pool, behind the ``Transcriber`` it is given (the engine, or the micro-batcher).
Each decoded segment is published at once on ``mumu.transcript.partial.<ws>``; the whole
transcript on ``mumu.transcript.final.<ws>``.

The normalised audio is read from the workspace's ``mumu-audio-<ws>`` (the shared
``mumu-audio`` for audio stored before per-workspace buckets) and deleted once the final
is published (and acknowledged by JetStream), before the input is acked: audio is not
kept at rest longer than it takes to transcribe it. A delivery that comes after that (a
lost ack, a replay) finds the object's delete marker, so it is done already (its final is
published) and is acked; an object that is simply gone (expired, never stored) is a dead
letter.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import nats.errors
import nats.js.errors
import numpy as np
from nats.js.object_store import ObjectStore

from mumu.broker.streams import open_object_store
from mumu.contracts import subjects
from mumu.contracts.consumers import TRANSCRIBE_AUDIO
from mumu.contracts.events import AudioReady, Segment, TranscriptFinal, TranscriptPartial, derive_id
from mumu.runtime import Inbound, Outbound, PermanentError, Route, StageContext, TransientError
from mumu.settings import Settings
from mumu.stages.transcribe.engine import Job, Result, wav_to_float
from mumu.stages.transcribe.live.limits import LiveLimits
from mumu.stages.transcribe.live.route import LiveRoute
from mumu.stages.transcribe.settings import TranscribeSettings
from mumu.stages.transcribe.transcriber import Transcriber, build_transcriber

log = logging.getLogger(__name__)

NAME = "transcribe"


class AlreadyTranscribedError(Exception):
    """The audio was deleted by this stage, after the final of the request was published."""


class TranscribeStage:
    name = NAME

    def __init__(self, settings: TranscribeSettings, transcriber: Transcriber,
                 live_limits: LiveLimits | None = None) -> None:
        self.settings = settings
        self.transcriber = transcriber
        self._store: ObjectStore | None = None
        self._ctx: StageContext | None = None
        self.live = LiveRoute(settings.live, transcriber, settings.model, live_limits,
                              workers=settings.num_workers)

    def routes(self) -> Sequence[Route]:
        return [
            Route(subjects.STREAM_AUDIO, (subjects.AUDIO_READY.wildcard,), self.handle,
                  model=AudioReady, durable=TRANSCRIBE_AUDIO.durable,
                  concurrency=self.transcriber.concurrency),
            self.live.route(),
        ]

    async def start(self, ctx: StageContext) -> None:
        self._ctx = ctx
        self._store = await open_object_store(ctx.js, subjects.BUCKET_AUDIO)
        await self.transcriber.start()
        await self.live.start(ctx)

    async def stop(self) -> None:
        await self.live.stop()
        await self.transcriber.stop()

    async def handle(self, inbound: Inbound[AudioReady]) -> Sequence[Outbound]:
        ready = inbound.body()
        language = ready.options.language
        if language is not None and language not in self.transcriber.languages:
            raise PermanentError(
                "schema_violation", f"Mumu-Language {language!r} is not a language of the model"
            )
        try:
            store, audio = await self._load(inbound.workspace_id, ready)
        except AlreadyTranscribedError:
            log.info(
                "already transcribed (its audio %s was deleted after the final)",
                ready.object_name,
                extra={"stage": NAME, "request_id": ready.request_id,
                       "subject": inbound.subject, "seq": inbound.sequence},
            )
            return []
        ws = inbound.workspace_id
        partial_subject = subjects.TRANSCRIPT_PARTIAL.for_workspace(ws)

        async def on_segment(segment: Segment, language: str) -> None:
            partial = TranscriptPartial(
                event_id=derive_id(ws, ready.request_id, NAME, "partial", segment.id),
                request_id=ready.request_id, workspace_id=ws, session_id=ready.session_id,
                segment=segment, language=language,
            )
            await inbound.emit(Outbound.of(partial_subject, partial))

        job = Job(audio=audio, options=ready.options)
        try:
            result = await self.transcriber.transcribe(job, on_segment)
        except (TransientError, PermanentError):
            raise
        except (RuntimeError, ValueError, MemoryError) as exc:
            raise TransientError("transcribe_failed", f"inference failed: {exc!r}") from exc
        self._observe(result)
        log.info(
            "transcribed %.2f s (%s, p=%.2f) in %.2f s: %d segments", result.duration,
            result.language, result.language_probability, result.compute_seconds,
            len(result.segments),
            extra={"stage": NAME, "request_id": ready.request_id, "subject": inbound.subject,
                   "seq": inbound.sequence},
        )
        final = self._final(ready, result)
        await inbound.emit(Outbound.of(subjects.TRANSCRIPT_FINAL.for_workspace(ws), final,
                                       once=True))
        await self._delete(store, ready)
        return []

    def _final(self, ready: AudioReady, result: Result) -> TranscriptFinal:
        return TranscriptFinal(
            event_id=derive_id(ready.workspace_id, ready.request_id, NAME, "final"),
            request_id=ready.request_id, workspace_id=ready.workspace_id,
            session_id=ready.session_id, text=result.text, segments=result.segments,
            language=result.language, language_probability=result.language_probability,
            duration=result.duration, model=self.settings.model,
            compute_seconds=result.compute_seconds, task=ready.options.task,
            answer=ready.options.answer,
        )

    def _observe(self, result: Result) -> None:
        if self._ctx is not None:
            m = self._ctx.metrics
            m.model_seconds.labels(m.stage, self.settings.model).inc(result.compute_seconds)

    async def _stores(self, workspace_id: str) -> list[ObjectStore]:
        """Where a request's audio may be: its workspace's bucket, then the shared one."""
        shared = self._require_store()
        if self._ctx is None:
            return [shared]
        try:
            own = await self._ctx.js.object_store(subjects.audio_bucket(workspace_id))
        except nats.js.errors.BucketNotFoundError:
            return [shared]
        except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
            raise TransientError("internal", f"opening the audio bucket: {exc!r}") from exc
        return [own, shared]

    async def _load(self, workspace_id: str, ready: AudioReady) -> tuple[ObjectStore, np.ndarray]:
        """The store holding the request's audio, and the audio."""
        for store in await self._stores(workspace_id):
            try:
                obj = await store.get(ready.object_name)
            except nats.js.errors.ObjectNotFoundError as exc:
                if await self._deleted(store, ready.object_name):
                    raise AlreadyTranscribedError(ready.object_name) from exc
                continue
            except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
                raise TransientError("internal", f"reading {ready.object_name}: {exc!r}") from exc
            loop = asyncio.get_running_loop()
            try:
                return store, await loop.run_in_executor(None, wav_to_float, obj.data or b"")
            except (ValueError, EOFError) as exc:
                raise PermanentError("transcribe_failed", f"{ready.object_name}: {exc}") from exc
        raise PermanentError(
            "transcribe_failed",
            f"normalised audio {ready.object_name} is gone (expired, or never stored)",
        )

    @staticmethod
    async def _deleted(store: ObjectStore, name: str) -> bool:
        """Whether ``name`` has a delete marker (this stage deleted it after its final)."""
        try:
            info = await store.get_info(name, show_deleted=True)
        except nats.js.errors.ObjectNotFoundError:
            return False
        except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
            raise TransientError("internal", f"reading {name}: {exc!r}") from exc
        return bool(info.deleted)

    @staticmethod
    async def _delete(store: ObjectStore, ready: AudioReady) -> None:
        """Delete the transcribed audio; if that fails, the bucket's max age removes it."""
        try:
            await store.delete(ready.object_name)
        except nats.js.errors.ObjectNotFoundError:
            pass  # deleted by a concurrent delivery of the same request
        except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
            log.warning(
                "could not delete the transcribed audio %s (it expires with the bucket's "
                "max age): %r", ready.object_name, exc,
                extra={"stage": NAME, "request_id": ready.request_id},
            )

    def _require_store(self) -> ObjectStore:
        if self._store is None:
            raise RuntimeError("transcribe stage used before start()")
        return self._store


def build_stage(settings: Settings) -> TranscribeStage:
    s = settings.transcribe
    return TranscribeStage(s, build_transcriber(s, settings.data_dir), LiveLimits.of(settings))

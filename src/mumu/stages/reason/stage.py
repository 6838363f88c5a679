"""The reason stage: a transcript or a text ask in, a streamed answer out.

Consumes ``mumu.transcript.final.*`` (stream MUMU_RESULTS) and
``mumu.ingest.text.*`` (stream MUMU_INGEST) on two durable consumers; publishes
``mumu.answer.delta.<ws>`` while the model writes and one ``mumu.answer.final.<ws>``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from mumu.contracts import subjects
from mumu.contracts.consumers import REASON_TEXT, REASON_TRANSCRIPTS
from mumu.contracts.events import (
    AnswerDelta,
    AnswerFinal,
    TextAsk,
    TranscriptFinal,
    Usage,
    derive_id,
)
from mumu.runtime import Inbound, Outbound, PermanentError, Route, StageContext, TransientError
from mumu.settings import Settings
from mumu.stages.reason.backend import Backend, BackendError, BackendInterruptedError, ChatRequest
from mumu.stages.reason.cancel import CancelRegistry
from mumu.stages.reason.prompt import PromptTooLong, build_messages, system_message
from mumu.stages.reason.quota import TextAskQuota
from mumu.stages.reason.sessions import SessionStore, SessionStoreError, check_share
from mumu.stages.reason.settings import ReasonSettings
from mumu.stages.reason.streaming import Answer, DeltaStream, generate

NAME = "reason"
log = logging.getLogger("mumu.stage.reason")


def build_backend(settings: ReasonSettings) -> Backend:
    if settings.backend == "openai":
        from mumu.stages.reason.openai_backend import OpenAIBackend

        return OpenAIBackend(settings.openai)
    from mumu.stages.reason.llama_backend import LlamaCppBackend

    return LlamaCppBackend(settings.llama_cpp, n_ctx=settings.context_tokens)


def answer_language(event: TranscriptFinal | TextAsk) -> str | None:
    """The language to answer in: the question's (English for a translated transcript)."""
    if isinstance(event, TranscriptFinal) and event.task == "translate":
        return "en"
    return event.language


class ReasonStage:
    name = NAME

    def __init__(
        self, settings: ReasonSettings, backend: Backend, sessions: SessionStore | None = None,
        quota: TextAskQuota | None = None,
    ) -> None:
        """``sessions``: the session context (``None``: the ``mumu-sessions`` bucket,
        opened in ``start``); ``quota``: the workspace quotas of text asks (``None``: none)."""
        self.settings = settings
        self.backend = backend
        self.cancels = CancelRegistry(settings.cancel_memory)
        self._given_sessions = sessions
        self._sessions = sessions
        self._ctx: StageContext | None = None
        self.quota = quota

    def routes(self) -> Sequence[Route]:
        # the backend says how many requests it takes at once and how to retry one
        b = self.backend
        return [
            Route(
                subjects.STREAM_RESULTS,
                (subjects.TRANSCRIPT_FINAL.wildcard,),
                self.handle,
                model=TranscriptFinal,
                durable=REASON_TRANSCRIPTS.durable,
                concurrency=b.concurrency,
                retry=b.retry,
            ),
            Route(
                subjects.STREAM_INGEST,
                (subjects.INGEST_TEXT.wildcard,),
                self.handle,
                model=TextAsk,
                durable=REASON_TEXT.durable,
                concurrency=b.concurrency,
                retry=b.retry,
            ),
        ]

    async def start(self, ctx: StageContext) -> None:
        self._ctx = ctx
        if self.quota is not None:
            self.quota.bind(ctx.js)
        await self.backend.start()
        s = self.settings
        # opened on every start: after a reconnect, a handle of the old connection is dead
        self._sessions = self._given_sessions
        if self._sessions is None:
            kv = await ctx.js.key_value(subjects.BUCKET_SESSIONS)
            await check_share(kv, s.session_slots)
            self._sessions = SessionStore(
                kv, max_turns=s.max_turns, turn_ttl=s.turn_ttl,
                cas_attempts=s.session_cas_attempts, slots=s.session_slots,
            )
        await self.cancels.subscribe(ctx.nc)
        log.info(
            "answering with %s (%s backend)", self.backend.model, s.backend, extra={"stage": NAME}
        )

    async def stop(self) -> None:
        await self.cancels.close()
        await self.backend.close()
        if self.quota is not None:
            await self.quota.close()

    @property
    def sessions(self) -> SessionStore:
        if self._sessions is None:
            raise RuntimeError("the reason stage is not started")
        return self._sessions

    async def handle(self, inbound: Inbound[Any]) -> Sequence[Outbound]:
        event: TranscriptFinal | TextAsk = inbound.body()
        if isinstance(event, TranscriptFinal) and not event.answer:
            return []  # transcribe-only request (e.g. /v1/audio/transcriptions)
        started = time.perf_counter()
        ws, rid = inbound.workspace_id, event.request_id
        question = event.text.strip()
        if not question:
            raise PermanentError("no_speech", "nothing to answer: the question is empty")
        final_subject = subjects.ANSWER_FINAL.for_workspace(ws)
        if self.quota is not None and isinstance(event, TranscriptFinal):
            await self.quota.refuse_shredded(ws)  # (a text ask: in ``admit``)
            if event.utterance:  # a live stream's second or later utterance: one ask
                await self.quota.take_utterance(ws, rid)
        # a raw NATS text ask over its workspace's quota: refused before any work
        took = (self.quota is not None and isinstance(event, TextAsk)
                and await self.quota.admit(ws, rid))
        with self.cancels.watch(ws, rid) as cancelled:
            try:
                session = await self.sessions.load(ws, event.session_id)
            except SessionStoreError as exc:
                raise TransientError("internal", str(exc)) from exc
            done = session.answered(rid)
            if done is not None:  # redelivered after its answer was recorded
                if took and self.quota is not None:
                    await self.quota.release(ws, rid)  # it ended already
                return [Outbound.of(final_subject, done, once=True)]
            request = await self._request(event, self.sessions.context(session))
            restart = session.may_have_streamed(rid, inbound.deliveries)
            answer = await self._answer(
                inbound, event, request, cancelled, started, restart=restart
            )
        final = AnswerFinal(
            event_id=derive_id(ws, rid, NAME, "final"),
            request_id=rid,
            workspace_id=ws,
            session_id=event.session_id,
            question=question,
            text=answer.text,
            model=self.backend.model,
            language=answer_language(event),
            usage=Usage(
                prompt_tokens=request.prompt_tokens, completion_tokens=request.completion_tokens
            ),
            time_to_first_token=answer.time_to_first_token,
            total_seconds=time.perf_counter() - started,
            cancelled=answer.cancelled,
        )
        try:
            await self.sessions.record(final)
        except SessionStoreError as exc:
            raise TransientError("internal", str(exc)) from exc
        log.info(
            "answered %s in %.3fs (%d tokens%s)",
            rid,
            final.total_seconds,
            request.completion_tokens,
            ", cancelled" if answer.cancelled else "",
            extra={
                "stage": NAME,
                "request_id": rid,
                "subject": inbound.subject,
                "seq": inbound.sequence,
            },
        )
        return [Outbound.of(final_subject, final, once=True)]

    async def _request(
        self, event: TranscriptFinal | TextAsk, history: list[AnswerFinal]
    ) -> ChatRequest:
        s = self.settings
        question = event.text.strip()
        system = system_message(s.system_prompt, answer_language(event))
        texts = [system.content, question]
        texts += [text for turn in history for text in (turn.question, turn.text)]
        counts = dict(zip(texts, await self.backend.count_tokens(texts), strict=True))
        try:
            messages, _ = build_messages(
                system=system,
                history=history,
                question=question,
                count_tokens=counts.__getitem__,
                budget=s.context_tokens - s.max_tokens,
            )
        except PromptTooLong as exc:
            raise PermanentError("too_long", str(exc)) from exc
        return ChatRequest(
            messages=messages,
            max_tokens=s.max_tokens,
            temperature=s.temperature,
            request_id=event.request_id,
        )

    async def _answer(
        self,
        inbound: Inbound[Any],
        event: TranscriptFinal | TextAsk,
        request: ChatRequest,
        cancelled: asyncio.Event,
        started: float,
        *,
        restart: bool,
    ) -> Answer:
        """Stream the answer; ``restart``: its first delta tells the client to start over."""
        attempt = inbound.deliveries
        ws, rid = inbound.workspace_id, event.request_id
        delta_subject = subjects.ANSWER_DELTA.for_workspace(ws)

        def make_delta(index: int, text: str) -> Outbound:
            delta = AnswerDelta(
                event_id=derive_id(ws, rid, NAME, "delta", attempt, index),
                request_id=rid,
                workspace_id=ws,
                session_id=event.session_id,
                index=index,
                attempt=attempt,
                text=text,
                restart=restart and index == 0,
            )
            return Outbound.of(delta_subject, delta)

        s = self.settings
        deltas = DeltaStream(
            inbound.emit, make_delta, interval=s.delta_interval, max_chunks=s.delta_max_chunks
        )
        t0 = time.perf_counter()
        try:
            answer = await generate(self.backend, request, deltas, cancelled, started)
        except BackendError as exc:
            what = (
                "stopped mid-answer" if isinstance(exc, BackendInterruptedError) else "unavailable"
            )
            if not deltas.started:
                await self._note_quiet_failure(inbound, event)
            raise TransientError(
                "reason_unavailable", f"model backend {what}: {exc}", delay=exc.retry_after,
                in_place=exc.retryable,
            ) from exc
        finally:
            if self._ctx is not None:
                m = self._ctx.metrics
                m.model_seconds.labels(m.stage, self.backend.model).inc(time.perf_counter() - t0)
        return answer

    async def _note_quiet_failure(
        self, inbound: Inbound[Any], event: TranscriptFinal | TextAsk
    ) -> None:
        """Remember that this delivery published nothing (so a retry is no ``restart``)."""
        try:
            await self.sessions.note_quiet_failure(
                inbound.workspace_id, event.session_id, event.request_id, inbound.deliveries
            )
        except SessionStoreError as exc:  # the retry then says restart, which is harmless
            log.warning(
                "cannot note a failed delivery of %s: %s",
                event.request_id,
                exc,
                extra={"stage": NAME, "request_id": event.request_id},
            )


def build_stage(settings: Settings) -> ReasonStage:
    return ReasonStage(settings.reason, build_backend(settings.reason),
                       quota=TextAskQuota.of(settings))

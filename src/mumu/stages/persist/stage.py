"""The persist stage: final transcripts and answers → encrypted rows → ``mumu.persisted``.

Handlers hand their record to a :class:`BatchWriter`; it writes one transaction per
batch per workspace and wakes each handler after the commit, so ``mumu.persisted.<ws>``
is published, and the input acked, only for committed rows.

Database down: the message is nak'ed with the runtime's growing delay; on its last
allowed delivery it is held (heart-beaten by the runtime) until the database answers
again, so an outage never dead-letters anything.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

import asyncpg
from pydantic import BaseModel

from mumu.contracts import subjects
from mumu.contracts.events import AnswerFinal, Persisted, TranscriptFinal, derive_id
from mumu.crypto import CryptoError, Keyring
from mumu.db.datakeys import DataKeys
from mumu.db.pool import UNAVAILABLE, create_app_pool
from mumu.db.records import KnownSessions, Record, UnknownWorkspaceError, write_records
from mumu.runtime import Inbound, Outbound, PermanentError, Route, StageContext, TransientError
from mumu.settings import Settings
from mumu.stages.persist.batcher import BatchWriter
from mumu.stages.persist.metrics import PersistMetrics
from mumu.stages.persist.records import check_workspace, parse_event, to_record

log = logging.getLogger(__name__)

NAME = "persist"


class DatabaseUnavailableError(Exception):
    """The batch could not be written because PostgreSQL is not reachable."""


class PersistStage:
    name = NAME

    def __init__(self, settings: Settings, keyring: Keyring) -> None:
        self.settings = settings
        self.data_keys = DataKeys(keyring)
        self.known = KnownSessions()
        self._workspaces: dict[str, str] = {}  # subject token -> canonical UUID
        self.pool: asyncpg.Pool | None = None
        self.max_deliver = settings.stage.max_deliver
        p = settings.persist
        self.writer: BatchWriter[Record] = BatchWriter(
            self._flush, max_rows=p.batch_rows, window=p.batch_window, writers=p.writers
        )
        self._writer_task: asyncio.Task[None] | None = None
        self.metrics: PersistMetrics | None = None

    def routes(self) -> Sequence[Route]:
        return [
            Route(
                subjects.STREAM_RESULTS,
                (subjects.TRANSCRIPT_FINAL.wildcard, subjects.ANSWER_FINAL.wildcard),
                self.handle,
                concurrency=self.settings.persist.concurrency,
            )
        ]

    async def start(self, ctx: StageContext) -> None:
        self.max_deliver = ctx.settings.stage.max_deliver
        self.metrics = PersistMetrics(ctx.metrics.registry)
        self.pool = await create_app_pool(
            ctx.settings, max_size=max(ctx.settings.persist.pool_max, ctx.settings.persist.writers)
        )
        self._writer_task = asyncio.create_task(self.writer.run())

    async def stop(self) -> None:
        self.writer.close()
        if self._writer_task is not None:
            await self._writer_task
        if self.pool is not None:
            await self.pool.close()

    async def handle(self, inbound: Inbound[BaseModel]) -> Sequence[Outbound]:
        event = parse_event(inbound.subject, inbound.data)
        ws = self._workspace(event, inbound.workspace_id)
        record = to_record(event)
        delay = 0.25
        while True:
            try:
                await self.writer.submit(ws, record)
                break
            except DatabaseUnavailableError as exc:
                if inbound.deliveries < self.max_deliver:
                    raise TransientError("persist_failed", f"database unavailable: {exc}") from exc
                log.warning(
                    "database unavailable on the last delivery; holding the message",
                    extra={"stage": NAME, "subject": inbound.subject, "seq": inbound.sequence},
                )
                await self._wait_for_database(delay)
                delay = min(delay * 2, self.settings.persist.retry_max_delay)
        persisted = Persisted(
            event_id=derive_id(event.request_id, NAME, record.kind, event.event_id),
            request_id=event.request_id,
            workspace_id=inbound.workspace_id,
            session_id=event.session_id,
            kind="transcript" if record.kind == "transcript" else "answer",
            source_event_id=event.event_id,
        )
        return [Outbound.of(subjects.PERSISTED.for_workspace(inbound.workspace_id), persisted)]

    def _workspace(self, event: TranscriptFinal | AnswerFinal, token: str) -> str:
        """The canonical workspace UUID of the subject (memoised: parsed once per token)."""
        ws = self._workspaces.get(token)
        if ws is None or event.workspace_id not in (token, ws):
            ws = check_workspace(event, token)  # raises for a bad token or a foreign body
            if len(self._workspaces) < 100_000:
                self._workspaces[token] = ws
        return ws

    async def _wait_for_database(self, delay: float) -> None:
        assert self.pool is not None
        while True:
            await asyncio.sleep(delay)
            try:
                await self.pool.fetchval("SELECT 1")
                return
            except UNAVAILABLE:
                delay = min(delay * 2, self.settings.persist.retry_max_delay)

    def _observe(self, records: list[Record], seconds: float) -> None:
        if self.metrics is None:
            return
        self.metrics.batch_rows.observe(len(records))
        self.metrics.batch_seconds.observe(seconds)
        answers = sum(1 for r in records if r.kind == "answer")
        self.metrics.rows.labels("answer").inc(answers)
        self.metrics.rows.labels("transcript").inc(len(records) - answers)

    def _failed(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.failed_batches.labels(reason).inc()

    async def _flush(self, ws: str, records: list[Record]) -> list[BaseException | None]:
        """Write a batch; when the database refuses some row's data, write one by one so
        only that row fails."""
        assert self.pool is not None
        started = time.perf_counter()
        try:
            await write_records(self.pool, self.data_keys, ws, records, self.known)
            self._observe(records, time.perf_counter() - started)
            return [None] * len(records)
        except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as exc:
            self._failed("rejected_row")
            if len(records) == 1:  # this row's data is what the database refuses
                log.warning("row rejected by the database: %s", exc,
                            extra={"stage": NAME, "workspace_id": ws})
                return [PermanentError("persist_failed", f"rejected by the database: {exc}")]
        except Exception as exc:  # noqa: BLE001 - classified and handed to every handler
            reason, failure = _failure(exc, ws)
            self._failed(reason)
            return [failure] * len(records)
        outcomes: list[BaseException | None] = []
        for record in records:
            outcomes.extend(await self._flush(ws, [record]))
        return outcomes


def _failure(exc: Exception, ws: str) -> tuple[str, Exception]:
    """(metric reason, what a failed batch means for each of its messages)."""
    if isinstance(exc, UNAVAILABLE):
        return "database_unavailable", DatabaseUnavailableError(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, UnknownWorkspaceError):
        return "unknown_workspace", PermanentError("unknown_workspace", str(exc))
    if isinstance(exc, CryptoError):  # e.g. a data key wrapped by a master key we lack
        log.warning("cannot use the data key: %s", exc, extra={"stage": NAME, "workspace_id": ws})
        return "keyring", TransientError("persist_failed", f"keyring: {exc}")
    if isinstance(exc, asyncpg.PostgresError):  # schema missing, privileges...: not the data
        log.warning("batch failed: %r", exc, extra={"stage": NAME, "workspace_id": ws})
        return "database_error", TransientError("persist_failed", f"database error: {exc}")
    return "other", exc


def build_stage(settings: Settings) -> PersistStage:
    """The persist stage; a missing or malformed ``MUMU_MASTER_KEYS`` fails here, clearly."""
    return PersistStage(settings, Keyring.from_settings(settings))

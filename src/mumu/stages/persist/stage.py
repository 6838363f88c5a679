"""The persist stage: final transcripts and answers → encrypted rows → ``mumu.persisted``.

A batch route: the runtime hands over each fetched batch (up to ``batch_rows``
messages; fewer when fewer are waiting, so a quiet stage never waits to fill one).
The batch is written as one transaction per workspace, concurrently over up to
``writers`` connections; the ``mumu.persisted.<ws>`` confirmations of the committed
rows are published together (one JetStream atomic batch) and only then are the
inputs acked.

Database down, or a data key wrapped by a master key this process's keyring lacks
(a rotation promoted before every process had the key): the messages are nak'ed with
the runtime's growing delay; a group holding a message on its last allowed delivery is
held instead (heart-beaten by the runtime) and retried until the database answers / the
key unwraps again, so neither ever dead-letters anything. The stage starts without a
database connection (the pool connects lazily), so it also starts during an outage.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from mumu.contracts import subjects
from mumu.contracts.events import AnswerFinal, Persisted, TranscriptFinal, derive_id
from mumu.crypto import CryptoError, Keyring
from mumu.db.datakeys import DataKeys
from mumu.db.pool import UNAVAILABLE, create_app_pool
from mumu.db.records import KnownSessions, Record, UnknownWorkspaceError, write_records
from mumu.runtime import Inbound, Outbound, PermanentError, Route, StageContext, TransientError
from mumu.settings import Settings
from mumu.stages.persist.metrics import PersistMetrics
from mumu.stages.persist.records import check_workspace, parse_event, to_record

log = logging.getLogger(__name__)

NAME = "persist"

Outcome = Sequence[Outbound] | BaseException


class HeldError(Exception):
    """The batch could not be written for a reason that waiting (or an operator) fixes,
    never the data: retried, and held rather than dead-lettered on a last delivery."""

    reason = "held"


class DatabaseUnavailableError(HeldError):
    """PostgreSQL is not reachable."""

    reason = "database_unavailable"


class KeyringUnavailableError(HeldError):
    """The workspace's data key does not unwrap with this process's master keyring."""

    reason = "keyring"


@dataclass(slots=True)
class _Item:
    """One message of a batch on its way to a row."""

    index: int
    inbound: Inbound[Any]
    event: TranscriptFinal | AnswerFinal
    record: Record


class PersistStage:
    name = NAME

    def __init__(self, settings: Settings, keyring: Keyring) -> None:
        self.settings = settings
        self.data_keys = DataKeys(keyring)
        self.known = KnownSessions()
        self._workspaces: dict[str, str] = {}  # subject token -> canonical UUID
        self.pool: asyncpg.Pool | None = None
        self.max_deliver = settings.stage.max_deliver
        self._writers = asyncio.Semaphore(settings.persist.writers)
        self.metrics: PersistMetrics | None = None

    def routes(self) -> Sequence[Route]:
        p = self.settings.persist
        return [
            Route(
                subjects.STREAM_RESULTS,
                (subjects.TRANSCRIPT_FINAL.wildcard, subjects.ANSWER_FINAL.wildcard),
                batch_handler=self.handle_batch,
                batch=p.batch_rows,
                concurrency=p.batch_rows * p.writers,
            )
        ]

    async def start(self, ctx: StageContext) -> None:
        self.max_deliver = ctx.settings.stage.max_deliver
        self.metrics = PersistMetrics(ctx.metrics.registry)
        self.pool = await create_app_pool(
            ctx.settings.database,
            max_size=max(ctx.settings.persist.pool_max, ctx.settings.persist.writers),
        )

    async def stop(self) -> None:
        if self.pool is not None:
            await self.pool.close()

    async def handle_batch(self, inbounds: Sequence[Inbound[Any]]) -> list[Outcome]:
        """Validate each message, write the rows per workspace, confirm what committed."""
        outcomes: list[Outcome] = [()] * len(inbounds)
        groups: dict[str, list[_Item]] = {}
        for i, inbound in enumerate(inbounds):
            try:
                event = parse_event(inbound.subject, inbound.data)
                ws = self._workspace(event, inbound.workspace_id)
                groups.setdefault(ws, []).append(_Item(i, inbound, event, to_record(event)))
            except PermanentError as exc:
                outcomes[i] = exc
        written = await asyncio.gather(*(self._write_group(ws, items)
                                         for ws, items in groups.items()))
        for items, results in zip(groups.values(), written, strict=True):
            for item, result in zip(items, results, strict=True):
                outcomes[item.index] = result if result is not None else [_confirmation(item)]
        return outcomes

    async def _write_group(self, ws: str, items: list[_Item]) -> list[BaseException | None]:
        """One workspace's rows of the batch; holds them while the database is down or the
        key does not unwrap if one of them is on its last delivery."""
        delay = 0.25
        held: str | None = None  # the reason, once held
        try:
            while True:
                async with self._writers:
                    results = await self._flush(ws, [item.record for item in items])
                failure = next((r for r in results if isinstance(r, HeldError)), None)
                if failure is None:
                    return results
                if all(item.inbound.deliveries < self.max_deliver for item in items):
                    return [TransientError("persist_failed", str(r))
                            if isinstance(r, HeldError) else r for r in results]
                if held is None:
                    held = failure.reason
                    self._hold(held, len(items))
                log.warning(
                    "holding %d messages on a last delivery (never dead-lettered for this): "
                    "%s", len(items), failure, extra={"stage": NAME, "workspace_id": ws},
                )
                if isinstance(failure, DatabaseUnavailableError):
                    await self._wait_for_database(delay)
                else:
                    await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.persist.retry_max_delay)
        finally:
            if held is not None:
                self._hold(held, -len(items))

    def _hold(self, reason: str, messages: int) -> None:
        if self.metrics is not None:
            self.metrics.held.labels(reason).inc(messages)

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
        except Exception as exc:  # noqa: BLE001 - classified and handed to every message
            reason, failure = _failure(exc, ws)
            self._failed(reason)
            return [failure] * len(records)
        outcomes: list[BaseException | None] = []
        for record in records:
            outcomes.extend(await self._flush(ws, [record]))
        return outcomes


def _confirmation(item: _Item) -> Outbound:
    """``mumu.persisted.<ws>`` for a committed row; its id derives from the source event."""
    event, record, ws = item.event, item.record, item.inbound.workspace_id
    persisted = Persisted(
        event_id=derive_id(ws, event.request_id, NAME, record.kind, event.event_id),
        request_id=event.request_id,
        workspace_id=ws,
        session_id=event.session_id,
        kind="transcript" if record.kind == "transcript" else "answer",
        source_event_id=event.event_id,
    )
    return Outbound.of(subjects.PERSISTED.for_workspace(ws), persisted)


def _failure(exc: Exception, ws: str) -> tuple[str, Exception]:
    """(metric reason, what a failed batch means for each of its messages)."""
    if isinstance(exc, UNAVAILABLE):
        return "database_unavailable", DatabaseUnavailableError(
            f"database unavailable: {type(exc).__name__}: {exc}")
    if isinstance(exc, UnknownWorkspaceError):
        return "unknown_workspace", PermanentError("unknown_workspace", str(exc))
    if isinstance(exc, CryptoError):  # e.g. a data key wrapped by a master key we lack
        log.error(
            "cannot unwrap the data key: %s. Nothing is dead-lettered: the messages are "
            "retried and held. Give this process the master key (MUMU_MASTER_KEYS, then "
            "restart it), or rewrap the data keys under a key every process has (`mumu "
            "keys rotate --promote ID`)", exc, extra={"stage": NAME, "workspace_id": ws},
        )
        return "keyring", KeyringUnavailableError(f"keyring: {exc}")
    if isinstance(exc, asyncpg.PostgresError):  # schema missing, privileges...: not the data
        log.warning("batch failed: %r", exc, extra={"stage": NAME, "workspace_id": ws})
        return "database_error", TransientError("persist_failed", f"database error: {exc}")
    return "other", exc


def build_stage(settings: Settings) -> PersistStage:
    """The persist stage; a missing or malformed ``MUMU_MASTER_KEYS`` fails here, clearly."""
    return PersistStage(settings, Keyring.from_secret(settings.master_keys))

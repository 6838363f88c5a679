"""The persist stage: final transcripts and answers → encrypted rows → ``mumu.persisted``.

A batch route: the runtime hands over each fetched batch (up to ``batch_rows``
messages; fewer when fewer are waiting, so a quiet stage never waits to fill one).
The batch is written as one transaction per workspace, concurrently over up to
``writers`` connections; the ``mumu.persisted.<ws>`` confirmations of the committed
rows are published together (one JetStream atomic batch) and only then are the
inputs acked.

Each workspace's group settles on its own: the rows of the healthy groups are written,
confirmed and acked whatever another group of the batch does, and each message gives
its in-flight slot back as soon as it is settled.

Database down: the messages fail with an ``UnavailableError``, which the runtime naks
with its growing delay and, on the last allowed delivery, holds (heart-beaten, re-run
after ``retry_max_delay`` at most) until the database answers, so an outage never
dead-letters anything. A workspace whose data key this process cannot unwrap (a master
key promoted before every process had it): the same, but a hold lasts ``key_hold_limit``
at most, then the message is dead-lettered (``persist_failed``, the reason names the key),
so one tenant's key trouble cannot keep the stage's in-flight slots. A shredded workspace
(``mumu keys shred``): its messages are dead-lettered without their bodies (``shredded``)
and erased from the stream, never stored (``stages/persist/shred.py``). The stage starts
without a database connection when the database is down (the pool connects on first
use); a role that row-level security does not bind is refused at start (or at first use).
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
from mumu.contracts.consumers import PERSIST_RESULTS
from mumu.contracts.events import AnswerFinal, Persisted, TranscriptFinal, derive_id
from mumu.crypto import CryptoError, Keyring
from mumu.db.datakeys import DataKeys, WorkspaceShreddedError
from mumu.db.owned_pool import OwnedPool
from mumu.db.pool import UNAVAILABLE
from mumu.db.records import KnownSessions, Record, UnknownWorkspaceError, write_records
from mumu.db.role_guard import UnsafeRoleError
from mumu.runtime import (
    Inbound,
    Outbound,
    PermanentError,
    RedactedError,
    RetryPolicy,
    Route,
    StageContext,
    TransientError,
    UnavailableError,
)
from mumu.settings import Settings
from mumu.stages.persist.metrics import PersistMetrics
from mumu.stages.persist.records import check_workspace, parse_event, to_record
from mumu.stages.persist.settings import PersistSettings
from mumu.stages.persist.shred import ShredListener, redacted

log = logging.getLogger(__name__)

NAME = "persist"

Outcome = Sequence[Outbound] | BaseException


@dataclass(slots=True)
class _Item:
    """One message of a batch on its way to a row."""

    index: int
    inbound: Inbound[Any]
    event: TranscriptFinal | AnswerFinal
    record: Record


class PersistStage:
    name = NAME

    def __init__(self, settings: PersistSettings, keyring: Keyring, pool: OwnedPool) -> None:
        self.settings = settings
        self.data_keys = DataKeys(keyring)
        self.shreds = ShredListener(self.data_keys)
        self.known = KnownSessions()
        self._workspaces: dict[str, str] = {}  # subject token -> canonical UUID
        self.pool = pool
        self._writers = asyncio.Semaphore(settings.writers)
        self.metrics: PersistMetrics | None = None

    def routes(self) -> Sequence[Route]:
        p = self.settings
        return [
            Route(
                subjects.STREAM_RESULTS,
                (subjects.TRANSCRIPT_FINAL.wildcard, subjects.ANSWER_FINAL.wildcard),
                batch_handler=self.handle_batch,
                durable=PERSIST_RESULTS.durable,
                batch=p.batch_rows,
                concurrency=p.batch_rows * p.writers,
                retry=RetryPolicy(first_delay=0.25, max_delay=p.retry_max_delay,
                                  held_per_workspace=p.key_held_per_workspace),
            )
        ]

    async def start(self, ctx: StageContext) -> None:
        self.metrics = PersistMetrics(ctx.metrics.registry)
        await self.shreds.subscribe(ctx.nc)
        # checks the role now (UnsafeRoleError stops the stage); a database that is down
        # is only logged: the pool connects on first use
        await self.pool.open(tolerate=True)

    async def stop(self) -> None:
        await self.shreds.close()
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
        """One workspace's rows of the batch, on one of ``writers`` connections."""
        async with self._writers:
            results = await self._flush(ws, [item.record for item in items])
        if any(isinstance(r, RedactedError) for r in results):
            await self.shreds.erase((item.inbound, item.event.session_id)
                                    for item, r in zip(items, results, strict=True)
                                    if isinstance(r, RedactedError))
        return results

    def _workspace(self, event: TranscriptFinal | AnswerFinal, token: str) -> str:
        """The canonical workspace UUID of the subject (memoised: parsed once per token)."""
        ws = self._workspaces.get(token)
        if ws is None or event.workspace_id not in (token, ws):
            ws = check_workspace(event, token)  # raises for a bad token or a foreign body
            if len(self._workspaces) < 100_000:
                self._workspaces[token] = ws
        return ws

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
        started = time.perf_counter()
        try:
            pool = await self.pool.get()
            await write_records(pool, self.data_keys, ws, records, self.known)
            self._observe(records, time.perf_counter() - started)
            return [None] * len(records)
        except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as exc:
            self._failed("rejected_row")
            if len(records) == 1:  # this row's data is what the database refuses
                log.warning("row rejected by the database: %s", exc,
                            extra={"stage": NAME, "workspace_id": ws})
                return [PermanentError("persist_failed", f"rejected by the database: {exc}")]
        except WorkspaceShreddedError as exc:  # never stored: dead letters without bodies
            self._failed("shredded")
            log.warning("%s", exc, extra={"stage": NAME, "workspace_id": ws})
            return [redacted(exc)] * len(records)
        except Exception as exc:  # noqa: BLE001 - classified and handed to every message
            reason, failure = _failure(exc, ws, self.settings.key_hold_limit)
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


def _failure(exc: Exception, ws: str, key_hold_limit: float) -> tuple[str, Exception]:
    """(metric reason, what a failed batch means for each of its messages)."""
    if isinstance(exc, UnsafeRoleError):  # the database came up with a role RLS does not bind
        log.error("%s", exc, extra={"stage": NAME})
        return "unsafe_role", UnavailableError("persist_failed", str(exc), reason="unsafe_role")
    if isinstance(exc, UNAVAILABLE):
        return "database_unavailable", UnavailableError(
            "persist_failed", f"database unavailable: {type(exc).__name__}: {exc}",
            reason="database_unavailable")
    if isinstance(exc, UnknownWorkspaceError):
        return "unknown_workspace", PermanentError("unknown_workspace", str(exc))
    if isinstance(exc, CryptoError):  # e.g. a data key wrapped by a master key we lack
        log.error(
            "cannot unwrap the data key: %s. The messages are retried, then held %gs at most "
            "on their last delivery before they are dead-lettered (`mumu dlq replay` brings "
            "them back). Give this process the master key (MUMU_MASTER_KEYS, then restart "
            "it), or rewrap the data keys under a key every process has (`mumu keys rotate "
            "--promote ID`)", exc, key_hold_limit, extra={"stage": NAME, "workspace_id": ws},
        )
        return "keyring", UnavailableError(
            "persist_failed", f"keyring: the data key of workspace {ws} cannot be unwrapped: "
            f"{exc}", reason="keyring", hold_limit=key_hold_limit)
    if isinstance(exc, asyncpg.PostgresError):  # schema missing, privileges...: not the data
        log.warning("batch failed: %r", exc, extra={"stage": NAME, "workspace_id": ws})
        return "database_error", TransientError("persist_failed", f"database error: {exc}")
    return "other", exc


def build_stage(settings: Settings) -> PersistStage:
    """The persist stage; a missing or malformed ``MUMU_MASTER_KEYS`` fails here, clearly."""
    p = settings.persist
    pool = OwnedPool.app(settings.database, max_size=max(p.pool_max, p.writers),
                         owner="the persist stage")
    return PersistStage(p, Keyring.from_secret(settings.master_keys), pool)

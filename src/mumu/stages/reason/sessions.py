"""Conversation context per session in the JetStream KV bucket ``mumu-sessions``.

The value under ``<workspace>.<session>`` is a JSON document of the session's last
turns, each the ``AnswerFinal`` that ended it (question, answer, language, usage).
Writes are compare-and-set on the entry's revision: two requests of one session
finishing at the same time both land, the loser of the race re-reads and retries.
A turn is keyed by its request id, so a redelivered request replaces its own turn
instead of adding a second one, and can re-publish the same final. At least
``REPLAY_TURNS`` answers are kept for that even when ``max_turns`` is smaller (0
included); only the last ``max_turns`` of them go into prompts.

``quiet`` remembers, per request still being retried, how many of its first
deliveries failed before publishing any delta: a retry is marked ``restart`` only
when an earlier delivery may have shown the client something.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import nats.errors
import nats.js.errors
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mumu.contracts.events import AnswerFinal

log = logging.getLogger(__name__)

MAX_VALUE_BYTES = 200_000
"""Below the bucket's max_value_size (256 KiB); older turns are dropped to fit."""
REPLAY_TURNS = 8
"""Answers kept per session at least, so a redelivered request is answered once."""
MAX_QUIET = 64
"""Requests tracked in ``quiet`` per session (the oldest are forgotten first)."""


class SessionDoc(BaseModel):
    model_config = ConfigDict(extra="ignore")

    turns: list[AnswerFinal] = Field(default_factory=list)
    quiet: dict[str, int] = Field(
        default_factory=dict,
        description="request id -> its first deliveries that failed before any delta",
    )

    def answered(self, request_id: str) -> AnswerFinal | None:
        return next((t for t in self.turns if t.request_id == request_id), None)

    def may_have_streamed(self, request_id: str, delivery: int) -> bool:
        """Whether an earlier delivery than ``delivery`` may have published deltas."""
        return delivery > 1 and self.quiet.get(request_id, 0) < delivery - 1


class SessionStoreError(Exception):
    """The KV bucket is unreachable or the compare-and-set kept losing."""


class SessionStore:
    def __init__(self, kv: KeyValue, *, max_turns: int, turn_ttl: float, cas_attempts: int) -> None:
        self._kv = kv
        self._max_turns = max_turns
        self._ttl = timedelta(seconds=turn_ttl)
        self._attempts = cas_attempts

    @staticmethod
    def key(workspace_id: str, session_id: str) -> str:
        return f"{workspace_id}.{session_id}"

    async def _read(self, key: str) -> tuple[SessionDoc, int]:
        """The document and its revision (0: no entry yet)."""
        try:
            entry = await self._kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            return SessionDoc(), 0
        except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
            raise SessionStoreError(f"cannot read session {key}: {exc!r}") from exc
        try:
            doc = SessionDoc.model_validate_json(entry.value or b"{}")
        except ValidationError:
            log.warning(
                "session %s holds an unreadable value; starting it afresh",
                key,
                extra={"stage": "reason"},
            )
            doc = SessionDoc()
        return doc, entry.revision or 0

    def _fresh(self, turns: list[AnswerFinal]) -> list[AnswerFinal]:
        oldest = datetime.now(UTC) - self._ttl
        return [t for t in turns if t.occurred_at >= oldest]

    async def load(self, workspace_id: str, session_id: str) -> SessionDoc:
        """The session as stored, expired turns left out."""
        doc, _ = await self._read(self.key(workspace_id, session_id))
        doc.turns = self._fresh(doc.turns)
        return doc

    def context(self, doc: SessionDoc) -> list[AnswerFinal]:
        """The turns that go into the prompt: the last ``max_turns``, oldest first."""
        return doc.turns[len(doc.turns) - self._max_turns :] if self._max_turns else []

    async def turns(self, workspace_id: str, session_id: str) -> list[AnswerFinal]:
        """The session's remembered turns, oldest first (expired ones left out)."""
        return self.context(await self.load(workspace_id, session_id))

    async def record(self, turn: AnswerFinal) -> None:
        """Add ``turn`` (or replace the turn of the same request) with compare-and-set."""
        keep = max(self._max_turns, REPLAY_TURNS)

        def change(doc: SessionDoc) -> SessionDoc | None:
            turns = [t for t in self._fresh(doc.turns) if t.request_id != turn.request_id]
            quiet = {r: n for r, n in doc.quiet.items() if r != turn.request_id}
            return SessionDoc(turns=[*turns, turn][-keep:], quiet=quiet)

        await self._update(self.key(turn.workspace_id, turn.session_id), change)

    async def note_quiet_failure(
        self, workspace_id: str, session_id: str, request_id: str, delivery: int
    ) -> None:
        """Delivery ``delivery`` of the request failed before publishing any delta."""

        def change(doc: SessionDoc) -> SessionDoc | None:
            if doc.quiet.get(request_id, 0) != delivery - 1:
                return None  # an earlier delivery may have streamed: restart stays due
            quiet = {r: n for r, n in doc.quiet.items() if r != request_id}
            quiet[request_id] = delivery
            kept = dict(list(quiet.items())[-MAX_QUIET:])
            return SessionDoc(turns=self._fresh(doc.turns), quiet=kept)

        await self._update(self.key(workspace_id, session_id), change)

    async def _update(self, key: str, change: Callable[[SessionDoc], SessionDoc | None]) -> None:
        """Apply ``change`` to the stored document with compare-and-set (None: no write)."""
        for attempt in range(1, self._attempts + 1):
            doc, revision = await self._read(key)
            new = change(doc)
            if new is None:
                return
            value = self._encode(new)
            try:
                if revision:
                    await self._kv.update(key, value, last=revision)
                else:
                    await self._kv.create(key, value)
                return
            except nats.js.errors.KeyWrongLastSequenceError:
                log.info(
                    "session %s changed under us (attempt %d); re-reading",
                    key,
                    attempt,
                    extra={"stage": "reason"},
                )
                await asyncio.sleep(random.uniform(0, 0.005 * attempt))
            except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
                raise SessionStoreError(f"cannot write session {key}: {exc!r}") from exc
        raise SessionStoreError(f"session {key}: {self._attempts} compare-and-set attempts lost")

    @staticmethod
    def _encode(doc: SessionDoc) -> bytes:
        turns = doc.turns
        while True:
            value = SessionDoc(turns=turns, quiet=doc.quiet).model_dump_json().encode()
            if len(value) <= MAX_VALUE_BYTES or len(turns) <= 1:
                return value
            turns = turns[1:]

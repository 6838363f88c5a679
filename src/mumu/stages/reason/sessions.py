"""Conversation context per session in the JetStream KV bucket ``mumu-sessions``.

The value under ``<workspace>.<session>`` is a JSON document of the session's last
turns, each the ``AnswerFinal`` that ended it (question, answer, language, usage).
Writes are compare-and-set on the entry's revision: two requests of one session
finishing at the same time both land, the loser of the race re-reads and retries.
A turn is keyed by its request id, so a redelivered request replaces its own turn
instead of adding a second one, and can re-publish the same final.
"""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import UTC, datetime, timedelta

import nats.errors
import nats.js.errors
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mumu.contracts.events import AnswerFinal

log = logging.getLogger(__name__)

MAX_VALUE_BYTES = 200_000
"""Below the bucket's max_value_size (256 KiB); older turns are dropped to fit."""


class SessionDoc(BaseModel):
    model_config = ConfigDict(extra="ignore")

    turns: list[AnswerFinal] = Field(default_factory=list)


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
            log.warning("session %s holds an unreadable value; starting it afresh", key)
            doc = SessionDoc()
        return doc, entry.revision or 0

    def _fresh(self, turns: list[AnswerFinal]) -> list[AnswerFinal]:
        oldest = datetime.now(UTC) - self._ttl
        return [t for t in turns if t.occurred_at >= oldest]

    async def turns(self, workspace_id: str, session_id: str) -> list[AnswerFinal]:
        """The session's remembered turns, oldest first (expired ones left out)."""
        doc, _ = await self._read(self.key(workspace_id, session_id))
        return self._fresh(doc.turns)

    async def record(self, turn: AnswerFinal) -> None:
        """Add ``turn`` (or replace the turn of the same request) with compare-and-set."""
        if self._max_turns == 0:
            return
        key = self.key(turn.workspace_id, turn.session_id)
        for attempt in range(1, self._attempts + 1):
            doc, revision = await self._read(key)
            turns = [t for t in self._fresh(doc.turns) if t.request_id != turn.request_id]
            turns.append(turn)
            value = self._encode(turns[-self._max_turns :])
            try:
                if revision:
                    await self._kv.update(key, value, last=revision)
                else:
                    await self._kv.create(key, value)
                return
            except nats.js.errors.KeyWrongLastSequenceError:
                log.info("session %s changed under us (attempt %d); re-reading", key, attempt)
                await asyncio.sleep(random.uniform(0, 0.005 * attempt))
            except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
                raise SessionStoreError(f"cannot write session {key}: {exc!r}") from exc
        raise SessionStoreError(f"session {key}: {self._attempts} compare-and-set attempts lost")

    @staticmethod
    def _encode(turns: list[AnswerFinal]) -> bytes:
        while True:
            value = SessionDoc(turns=turns).model_dump_json().encode()
            if len(value) <= MAX_VALUE_BYTES or len(turns) <= 1:
                return value
            turns = turns[1:]

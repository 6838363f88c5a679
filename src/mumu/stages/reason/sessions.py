"""Conversation context per session in the JetStream KV bucket ``mumu-sessions``.

A workspace has at most ``slots`` entries, ``<workspace>.s<n>``: a session lives in the
slot its id hashes to, and the entry is a JSON document of the slot's sessions, each with
its last turns (the ``AnswerFinal`` that ended it: question, answer, language, usage).
So one workspace holds at most ``slots x MAX_VALUE_BYTES`` of the shared bucket however
many sessions it opens (``docs/reliability.md``, "Storage bounds"): when an entry would
outgrow ``MAX_VALUE_BYTES``, the sessions written least recently leave it first, then the
oldest turns of the one being written; a turn too big on its own is not remembered.
Writes are compare-and-set on the entry's revision: two requests of one slot
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
import hashlib
import logging
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import nats.errors
import nats.js.errors
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mumu.broker.bounds import SHARES, StorageBoundError
from mumu.contracts.events import AnswerFinal
from mumu.contracts.subjects import BUCKET_SESSIONS

log = logging.getLogger(__name__)

MAX_VALUE_BYTES = 200_000
"""Below the bucket's max_value_size (256 KiB); older turns are dropped to fit."""
REPLAY_TURNS = 8
"""Answers kept per session at least, so a redelivered request is answered once."""
MAX_QUIET = 64
"""Requests tracked in ``quiet`` per session (the oldest are forgotten first)."""
SLOTS = 16
"""Entries per workspace in the bucket (``ReasonSettings.session_slots``)."""


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


class SlotDoc(BaseModel):
    """The sessions of one slot, the one written least recently first."""

    model_config = ConfigDict(extra="ignore")

    sessions: dict[str, SessionDoc] = Field(default_factory=dict)


class SessionStoreError(Exception):
    """The KV bucket is unreachable or the compare-and-set kept losing."""


class SessionStore:
    def __init__(
        self, kv: KeyValue, *, max_turns: int, turn_ttl: float, cas_attempts: int,
        slots: int = SLOTS,
    ) -> None:
        self._kv = kv
        self._max_turns = max_turns
        self._ttl = timedelta(seconds=turn_ttl)
        self._attempts = cas_attempts
        self._slots = slots

    def key(self, workspace_id: str, session_id: str) -> str:
        """The entry of the slot ``session_id`` hashes to (stable across processes)."""
        digest = hashlib.blake2b(session_id.encode(), digest_size=8).digest()
        return f"{workspace_id}.s{int.from_bytes(digest) % self._slots}"

    async def _read(self, key: str) -> tuple[SlotDoc, int]:
        """The slot's document and its revision (0: no entry yet)."""
        try:
            entry = await self._kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            return SlotDoc(), 0
        except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
            raise SessionStoreError(f"cannot read session {key}: {exc!r}") from exc
        try:
            doc = SlotDoc.model_validate_json(entry.value or b"{}")
        except ValidationError:
            log.warning(
                "session %s holds an unreadable value; starting it afresh",
                key,
                extra={"stage": "reason"},
            )
            doc = SlotDoc()
        return doc, entry.revision or 0

    def _fresh(self, turns: list[AnswerFinal]) -> list[AnswerFinal]:
        oldest = datetime.now(UTC) - self._ttl
        return [t for t in turns if t.occurred_at >= oldest]

    async def load(self, workspace_id: str, session_id: str) -> SessionDoc:
        """The session as stored, expired turns left out."""
        slot, _ = await self._read(self.key(workspace_id, session_id))
        doc = slot.sessions.get(session_id, SessionDoc())
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

        await self._update(turn.workspace_id, turn.session_id, change)

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

        await self._update(workspace_id, session_id, change)

    async def _update(
        self, workspace_id: str, session_id: str,
        change: Callable[[SessionDoc], SessionDoc | None],
    ) -> None:
        """Apply ``change`` to the session's document with compare-and-set on its slot
        (None: no write)."""
        key = self.key(workspace_id, session_id)
        for attempt in range(1, self._attempts + 1):
            slot, revision = await self._read(key)
            new = change(slot.sessions.get(session_id, SessionDoc()))
            if new is None:
                return
            value = self._encode(slot, session_id, new, key)
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

    def _encode(self, slot: SlotDoc, session_id: str, doc: SessionDoc, key: str) -> bytes:
        """The slot with ``doc`` as its most recent session, within ``MAX_VALUE_BYTES``:
        a newest turn too big on its own is left out, ``doc``'s oldest turns go until it
        fits alone, then the other sessions (least recently written first)."""
        turns = list(doc.turns)
        if turns and _size({session_id: SessionDoc(turns=turns[-1:])}) > MAX_VALUE_BYTES:
            log.warning("session %s: a turn of %s is too big to remember", key, session_id,
                        extra={"stage": "reason", "request_id": turns[-1].request_id})
            turns = turns[:-1]
        while turns and _size({session_id: SessionDoc(turns=turns, quiet=doc.quiet)}) \
                > MAX_VALUE_BYTES:
            turns = turns[1:]
        mine = SessionDoc(turns=turns, quiet=doc.quiet)
        others = {sid: SessionDoc(turns=self._fresh(d.turns), quiet=d.quiet)
                  for sid, d in slot.sessions.items() if sid != session_id}
        sessions = {sid: d for sid, d in others.items() if d.turns or d.quiet}
        sessions[session_id] = mine
        while len(sessions) > 1 and _size(sessions) > MAX_VALUE_BYTES:
            sessions.pop(next(iter(sessions)))
        return SlotDoc(sessions=sessions).model_dump_json().encode()


def _size(sessions: dict[str, SessionDoc]) -> int:
    return len(SlotDoc(sessions=sessions).model_dump_json().encode())

async def check_share(kv: KeyValue, slots: int) -> None:
    """``StorageBoundError`` when ``slots`` entries of ``MAX_VALUE_BYTES`` let one workspace
    hold more than ``1/SHARES`` of the bucket, or the bucket refuses such an entry."""
    config = (await kv.status()).stream_info.config
    total, largest = config.max_bytes or -1, config.max_msg_size or -1
    if 0 < largest < MAX_VALUE_BYTES + 1024:
        raise StorageBoundError(
            f"bucket {BUCKET_SESSIONS}: max_value_size {largest} is below a session entry "
            f"({MAX_VALUE_BYTES} bytes and its headers)")
    if total > 0 and slots * MAX_VALUE_BYTES * SHARES > total:
        raise StorageBoundError(
            f"bucket {BUCKET_SESSIONS}: {slots} session slots of {MAX_VALUE_BYTES} bytes let one "
            f"workspace hold more than 1/{SHARES} of its {total} bytes "
            "(lower MUMU_REASON__SESSION_SLOTS or raise max_bytes in streams/buckets.json)")

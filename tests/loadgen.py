"""A bounded, mixed load through the real gateway (text and uploaded audio asks, several
workspaces), and the ground truth to judge it by: what JetStream acknowledged and what
PostgreSQL holds.

Each request carries its own request id, so a client that gets a 503, a 429, a 504 or a
broken connection asks again with the same id (the gateway then answers with the existing
request instead of queueing a new one), as a well-behaved client does.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from nats.aio.client import Client as NATS

from mumu.contracts import headers as h
from mumu.contracts import subjects

RETRIED = {429, 503, 504}
QUESTION = "What is the capital of France? #{}"
"""A text ask, its number last: every ask's prompt is the one before it but for a few
tokens, which llama.cpp does not read again (what is new costs 15 ms a token on 1 thread)."""
"""Statuses a client asks again after (same request id)."""


@dataclass
class Outcome:
    request_id: str
    workspace: str
    kind: str
    attempts: int = 0
    status: int | None = None
    """The last HTTP status (None: no answer at all)."""
    answer: str | None = None
    transcript: str | None = None
    statuses: list[int] = field(default_factory=list)
    first_sent_at: float | None = None
    """``time.monotonic()`` of the first attempt."""
    done_at: float | None = None
    """``time.monotonic()`` of the final answer."""
    refusals: list[tuple[float, int, str | None, str]] = field(default_factory=list)
    """Each retried refusal: when (``time.monotonic()``), status, Retry-After, body."""

    @property
    def final(self) -> bool:
        return self.status == 200 and self.answer is not None


@dataclass
class Tenant:
    workspace: str
    api_key: str


class Load:
    """``total`` asks over ``tenants`` from ``clients`` concurrent clients; every
    ``audio_every``-th ask uploads one of ``clips`` instead of text."""

    def __init__(
        self, gateway: str, tenants: list[Tenant], clips: list[Path], *, total: int,
        clients: int = 12, audio_every: int = 8, attempts: int = 40,
        request_timeout: float = 150.0,
    ) -> None:
        self.gateway = gateway
        self.tenants = tenants
        self.clips = [(p.name, p.read_bytes()) for p in clips]
        self.total = total
        self.clients = clients
        self.audio_every = audio_every
        self.attempts = attempts
        self.request_timeout = request_timeout
        self.outcomes: list[Outcome] = []
        self.started = 0.0

    async def _token(self, http: aiohttp.ClientSession, tenant: Tenant) -> str:
        """A session of its own for each ask, as independent users have: a shared session
        would make every prompt carry all earlier turns."""
        while True:
            async with http.post(f"{self.gateway}/api/session",
                                 headers={"Authorization": f"Bearer {tenant.api_key}"}) as resp:
                if resp.status == 200:
                    token: str = (await resp.json())["token"]
                    return token
                assert resp.status in RETRIED, await resp.text()
            await asyncio.sleep(0.5)

    def _plan(self) -> list[Outcome]:
        cycle = itertools.cycle(self.tenants)
        return [
            Outcome(str(uuid.uuid4()), next(cycle).workspace,
                    "audio" if self.audio_every and i % self.audio_every == 0 else "text")
            for i in range(self.total)
        ]

    async def _send(self, http: aiohttp.ClientSession, out: Outcome, index: int) -> None:
        out.first_sent_at = time.monotonic()
        tenant = next(t for t in self.tenants if t.workspace == out.workspace)
        token = await self._token(http, tenant)
        url = f"{self.gateway}/api/ask?wait=true&request_id={out.request_id}"
        while out.attempts < self.attempts:
            out.attempts += 1
            body: Any
            if out.kind == "audio":
                name, data = self.clips[index % len(self.clips)]
                body = aiohttp.FormData()
                body.add_field("audio", data, filename=name, content_type="audio/wav")
            else:
                body = None
            retry_after = 0.5
            try:
                async with http.post(
                    url, headers={"Authorization": f"Bearer {token}"}, data=body,
                    json=None if body is not None else {"text": QUESTION.format(index)},
                    timeout=aiohttp.ClientTimeout(total=self.request_timeout),
                ) as resp:
                    out.status = resp.status
                    out.statuses.append(resp.status)
                    if resp.status == 200:
                        result = await resp.json()
                        out.answer, out.transcript = result["answer"], result["transcript"]
                        out.done_at = time.monotonic()
                        return
                    if resp.status not in RETRIED:
                        return  # a client error: reported as such, not retried
                    retry_after = float(resp.headers.get("Retry-After", "0.5") or 0.5)
                    out.refusals.append((time.monotonic(), resp.status,
                                         resp.headers.get("Retry-After"),
                                         (await resp.text())[:300]))
            except (aiohttp.ClientError, TimeoutError):
                out.status = None
                out.statuses.append(0)
            await asyncio.sleep(min(retry_after, 2.0))

    async def run(self) -> list[Outcome]:
        self.outcomes = self._plan()
        queue: asyncio.Queue[tuple[int, Outcome]] = asyncio.Queue()
        for item in enumerate(self.outcomes):
            queue.put_nowait(item)
        connector = aiohttp.TCPConnector(limit=self.clients * 2)
        async with aiohttp.ClientSession(connector=connector) as http:
            self.started = time.monotonic()

            async def client() -> None:
                while True:
                    try:
                        index, out = queue.get_nowait()
                    except asyncio.QueueEmpty:
                        return
                    await self._send(http, out, index)

            async with asyncio.TaskGroup() as tg:
                for _ in range(self.clients):
                    tg.create_task(client())
        return self.outcomes

    def finals_between(self, start: float, end: float) -> int:
        return sum(1 for o in self.outcomes if o.done_at is not None and start <= o.done_at < end)


def request_id_of(headers: dict[str, str], data: bytes) -> str:
    """An ingest message's request id: a header on audio, a field of a text ask's JSON."""
    if h.REQUEST_ID in headers:
        return headers[h.REQUEST_ID]
    try:
        return str(json.loads(data)["request_id"])
    except (ValueError, KeyError, TypeError):
        return ""


@dataclass
class Acked:
    """What JetStream acknowledged: request id → how often MUMU_INGEST holds it, and the
    text asks among them (they have an answer row but no transcript row)."""

    counts: Counter[str]
    text: set[str]

    @property
    def ids(self) -> set[str]:
        return {rid for rid in self.counts if rid}


async def acknowledged_requests(nc: NATS) -> Acked:
    """Every request MUMU_INGEST holds, read through an ephemeral ordered consumer."""
    js = nc.jetstream()
    info = await js.stream_info(subjects.STREAM_INGEST)
    acked = Acked(Counter(), set())
    if not info.state.messages:
        return acked
    sub = await js.subscribe(">", stream=subjects.STREAM_INGEST, ordered_consumer=True)
    try:
        last = info.state.last_seq
        while True:
            msg = await sub.next_msg(timeout=10)
            rid = request_id_of(msg.headers or {}, msg.data)
            acked.counts[rid] += 1
            if msg.subject.startswith(subjects.INGEST_TEXT.prefix + "."):
                acked.text.add(rid)
            if msg.metadata.sequence.stream >= last:
                return acked
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


async def stored_rows(admin_url: str) -> dict[str, Counter[str]]:
    """Table → request id → rows (read as the owner: every workspace)."""
    conn = await asyncpg.connect(admin_url)
    try:
        rows: dict[str, Counter[str]] = {}
        for table in ("transcripts", "answers"):
            records = await conn.fetch(
                f"SELECT request_id, count(*) AS n FROM mumu.{table} GROUP BY request_id")  # noqa: S608
            rows[table] = Counter({r["request_id"]: r["n"] for r in records})
        return rows
    finally:
        await conn.close()


def complete(acked: Acked, rows: dict[str, Counter[str]]) -> set[str]:
    """The acknowledged requests whose rows are all stored: an answer, and a transcript
    for every ask that was not text."""
    return {rid for rid in acked.ids
            if rows["answers"].get(rid) and (rid in acked.text or rows["transcripts"].get(rid))}


async def wait_stored(admin_url: str, acked: Acked, timeout: float) -> dict[str, Counter[str]]:
    """Rows once every acknowledged request is stored (or at timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = await stored_rows(admin_url)
        if complete(acked, rows) == acked.ids or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(1.0)


@dataclass
class Counts:
    """What a run did, as ``benchmarks/results/*.json`` records it."""

    sent: int
    accepted: int
    acknowledged: int
    persisted: int
    duplicated: int
    lost: int
    finals_to_clients: int
    errors_to_clients: int
    statuses: dict[str, int]

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def judge(outcomes: list[Outcome], acked: Acked, rows: dict[str, Counter[str]]) -> Counts:
    """Compare what clients saw, what JetStream acknowledged and what PostgreSQL holds."""
    accepted = {o.request_id for o in outcomes if any(s in (200, 202, 504) for s in o.statuses)}
    stored = complete(acked, rows)
    duplicated = sum(1 for table in rows.values() for n in table.values() if n > 1)
    statuses = Counter(str(s) for o in outcomes for s in o.statuses)
    return Counts(
        sent=len(outcomes), accepted=len(accepted), acknowledged=len(acked.ids),
        persisted=len(stored), duplicated=duplicated,
        lost=len((acked.ids | accepted) - stored),
        finals_to_clients=sum(1 for o in outcomes if o.final),
        errors_to_clients=sum(1 for o in outcomes if not o.final),
        statuses=dict(sorted(statuses.items())),
    )


def write_result(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, sort_keys=False) + "\n")

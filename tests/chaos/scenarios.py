"""The chaos run's bookkeeping: a load that remembers when each request was first sent and
keeps going through a dead gateway, the faults with their times, and each fault's counts
(the requests first sent while it was the latest fault) for
``benchmarks/results/chaos-<scenario>.json``."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import itertools
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from nats.aio.client import Client as NATS

from mumu.bench import reliability
from mumu.contracts import headers as h
from mumu.contracts import subjects
from tests.loadgen import RETRIED, Acked, Load, Outcome, Tenant, judge, request_id_of

SESSIONS_PER_TENANT = 8
"""Sessions the load's asks share per workspace (each ask a session of its own would
make the database a precondition of every ask: a session is made with the API key)."""


class ChaosLoad(Load):
    """``Load`` whose clients reuse a few sessions (``MUMU_REASON__MAX_TURNS=0`` keeps
    the prompts short), retry a session request through a dead gateway or database,
    and record when each request was first sent."""

    def __init__(self, *args: Any, lasting: float = 0.0, **kwargs: Any) -> None:
        """``lasting``: the load is spread over at least that many seconds (each client
        starts an ask at most every ``clients * lasting / total`` seconds), so that every
        fault of the run falls inside it however fast the machine answers."""
        super().__init__(*args, **kwargs)
        self.interval = self.clients * lasting / max(self.total, 1)
        self._last_start: dict[int, float] = {}
        self._tokens: dict[str, list[str]] = {}
        self._turn = itertools.count()

    async def _token(self, http: aiohttp.ClientSession, tenant: Tenant) -> str:
        tokens = self._tokens.setdefault(tenant.workspace, [])
        if len(tokens) >= SESSIONS_PER_TENANT:
            return tokens[next(self._turn) % len(tokens)]
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.post(f"{self.gateway}/api/session",
                                     headers={"Authorization": f"Bearer {tenant.api_key}"},
                                     timeout=aiohttp.ClientTimeout(total=10)) as resp:
                    if resp.status == 200:
                        token: str = (await resp.json())["token"]
                        tokens.append(token)
                        return token
                    assert resp.status in RETRIED, await resp.text()
            assert time.monotonic() < deadline, "no session in 120 s"
            await asyncio.sleep(0.5)

    async def _send(self, http: aiohttp.ClientSession, out: Outcome, index: int) -> None:
        if self.interval:
            client = id(asyncio.current_task())
            wait = self._last_start.get(client, 0.0) + self.interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._last_start[client] = time.monotonic()
        await super()._send(http, out, index)

    def first_final_after(self, at: float) -> float | None:
        done = [o.done_at for o in self.outcomes if o.done_at is not None and o.done_at >= at]
        return min(done) if done else None


@dataclass
class Fault:
    scenario: str
    faults: str
    """What was done, in words (the report's "faults injected")."""
    injected: float = 0.0
    restored: float = 0.0
    """When the fault was lifted (process restarted, server back, setting restored)."""
    recovered: float | None = None
    """When the pipeline had caught up again (see ``recovery_seconds``)."""
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def recovery_seconds(self) -> float | None:
        """From the fault to the first final answer after it was lifted (the slowdown:
        to the lag drained below the gateway's threshold)."""
        return None if self.recovered is None else round(self.recovered - self.injected, 1)


async def dead_letters(nc: NATS) -> Counter[str]:
    """Request id → dead letters MUMU_DLQ holds for it."""
    js = nc.jetstream()
    info = await js.stream_info(subjects.STREAM_DLQ)
    letters: Counter[str] = Counter()
    if not info.state.messages:
        return letters
    sub = await js.subscribe(">", stream=subjects.STREAM_DLQ, ordered_consumer=True)
    try:
        while True:
            msg = await sub.next_msg(timeout=10)
            headers = msg.headers or {}
            original = headers.get(h.DLQ_ORIGINAL_PREFIX + h.REQUEST_ID)
            letters[original or request_id_of(headers, msg.data)] += 1
            if msg.metadata.sequence.stream >= info.state.last_seq:
                return letters
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


def window_record(
    fault: Fault, end: float, outcomes: list[Outcome],
    acked: Acked, rows: dict[str, Counter[str]], letters: Counter[str], live: dict[str, Any],
) -> dict[str, Any]:
    """The counts of the requests first sent in [``fault.injected``, ``end``)."""
    mine = [o for o in outcomes
            if o.first_sent_at is not None and fault.injected <= o.first_sent_at < end]
    ids = {o.request_id for o in mine}
    window = Acked(Counter({rid: n for rid, n in acked.counts.items() if rid in ids}),
                   acked.text & ids)
    counts = judge(mine, window, {table: Counter({r: n for r, n in by_id.items() if r in ids})
                                  for table, by_id in rows.items()})
    dead = sum(n for rid, n in letters.items() if rid in ids)
    record = {
        "scenario": fault.scenario,
        "load": {"text": sum(o.kind == "text" for o in mine),
                 "audio": sum(o.kind == "audio" for o in mine), **live},
        "faults": fault.faults,
        "sent": counts.sent, "accepted": counts.accepted,
        "acknowledged": counts.acknowledged, "persisted": counts.persisted,
        "duplicated": counts.duplicated + live.get("duplicated", 0),
        "lost": counts.lost + live.get("lost", 0),
        "dead_lettered": dead,
        "client_errors": counts.errors_to_clients,
        "finals_to_clients": counts.finals_to_clients,
        "recovery_seconds": fault.recovery_seconds,
        "window_seconds": round(end - fault.injected, 1),
        "statuses": counts.statuses,
        **fault.notes,
    }
    record["result"] = "pass" if passed(record) else "fail"
    return record


def passed(record: dict[str, Any]) -> bool:
    """What every scenario must show: traffic, nothing lost, nothing twice, no dead
    letter, every client its final, and a recovery."""
    return bool(record["sent"] and record["lost"] == 0 and record["duplicated"] == 0
                and record["dead_lettered"] == 0 and record["client_errors"] == 0
                and record["acknowledged"] >= record["accepted"]
                and record["recovery_seconds"] is not None)


ROOT = Path(__file__).parents[2]
RESULTS = ROOT / "benchmarks" / "results"
REPORT = ROOT / "docs" / "reliability.md"


@contextlib.contextmanager
def results_lock() -> Iterator[None]:
    """Held while chaos files are written and the table regenerated, or both read: the
    chaos run and the cluster failover run on two pytest workers at once."""
    name = hashlib.sha256(str(RESULTS.resolve()).encode()).hexdigest()[:16]
    with (Path(tempfile.gettempdir()) / f"mumu-chaos-results-{name}.lock").open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def regenerate_report() -> None:
    """docs/reliability.md's table from the chaos files just written (a run rewrites both,
    so they agree; commit them together after a real run)."""
    REPORT.write_text(reliability.with_table(REPORT.read_text(), RESULTS))

"""Test harness: run a stage on the real server and collect what comes out."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from mumu.broker.roles import Role
from mumu.runtime.metrics import StageMetrics
from mumu.runtime.process import run_stage
from mumu.runtime.stage import Stage
from mumu.runtime.tracing import Tracing
from mumu.settings import Settings


@dataclass
class Seen:
    subject: str
    data: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.data)


class Collector:
    """Records every message on ``subject`` (core NATS) from the moment it is opened."""

    def __init__(self, nc: NATS, subject: str = "mumu.>") -> None:
        self.nc = nc
        self.subject = subject
        self.messages: list[Seen] = []
        self._changed = asyncio.Condition()
        self._sub: Any = None

    async def __aenter__(self) -> Collector:
        async def on_msg(msg: Msg) -> None:
            self.messages.append(Seen(msg.subject, msg.data, dict(msg.headers or {})))
            async with self._changed:
                self._changed.notify_all()

        self._sub = await self.nc.subscribe(self.subject, cb=on_msg)
        await self.nc.flush()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._sub.unsubscribe()

    def on(self, prefix: str) -> list[Seen]:
        return [m for m in self.messages if m.subject.startswith(prefix)]

    async def wait_for(
        self, predicate: Callable[[list[Seen]], bool], timeout: float = 10.0
    ) -> list[Seen]:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: predicate(self.messages))
        return self.messages

    async def wait_count(self, prefix: str, count: int, timeout: float = 10.0) -> list[Seen]:
        await self.wait_for(lambda _: len(self.on(prefix)) >= count, timeout)
        return self.on(prefix)


@contextlib.asynccontextmanager
async def running(
    stage: Stage, settings: Settings, timeout: float = 60.0, metrics: StageMetrics | None = None,
    tracing: Tracing | None = None,
) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``stage`` in this event loop until the block ends (then drain it); ``metrics``:
    the runtime's registry for the stage, to read what it counted.

    A test-only stage (a name that is no service role) runs as the operator."""
    creds = settings.nats.credentials
    if stage.name not in set(Role) and creds is not None and creds.is_dir():
        nats = settings.nats.model_copy(update={"credentials": creds / f"{Role.OPERATOR}.nk"})
        settings = settings.model_copy(update={"nats": nats})
    stop = asyncio.Event()
    started = asyncio.Event()
    task = asyncio.create_task(
        run_stage(stage, settings, stop, started=started, metrics=metrics, tracing=tracing))
    waiter = asyncio.create_task(started.wait())
    done, _ = await asyncio.wait({task, waiter}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        waiter.cancel()
        task.result()  # raises the start-up error
    if waiter not in done:
        task.cancel()
        raise TimeoutError("stage did not start")
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=settings.stage.drain_timeout + 10)

"""A pass-through stage used only by tests: hop1 → hop2, with scriptable faults."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Sequence
from typing import Literal

from mumu.bench.stream import BENCH_HOPS, STREAM_BENCH
from mumu.contracts.consumers import StageConsumer
from mumu.contracts.events import Event, derive_id
from mumu.runtime import (
    Inbound,
    Outbound,
    PermanentError,
    RetryPolicy,
    Route,
    StageContext,
    TransientError,
    UnavailableError,
)
from mumu.settings import Settings


class Ping(Event):
    behaviour: Literal[
        "ok", "transient", "permanent", "flaky", "slow", "die_after_publish", "unavailable",
        "busy_twice", "emit_then_fail",
    ] = "ok"
    seconds: float = 0.0
    hop: int = 1


class PassThrough:
    """Forwards ``mumu.bench.hop1.<ws>`` to ``mumu.bench.hop2.<ws>``.

    ``flaky`` fails the first delivery only; ``transient`` always fails (dead letter
    after max_deliver); ``slow`` sleeps ``seconds`` before publishing;
    ``die_after_publish`` publishes its output, then SIGKILLs its own process before
    the ack (first delivery only); ``unavailable`` fails with ``UnavailableError`` while
    ``down`` is set; ``busy_twice`` fails (transient) on its first two calls;
    ``emit_then_fail`` publishes its output, then fails (transient) on the first delivery.
    ``retry`` is the route's ``RetryPolicy``.
    """

    name = "passthrough"

    def __init__(
        self, inp: int = 1, out: int = 2, *, batched: bool = False, durable: str | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.inp = BENCH_HOPS[inp]
        self.out = BENCH_HOPS[out]
        self.batched = batched
        self.durable = durable
        self.retry = retry
        self.down = False
        self.calls: list[tuple[str, int]] = []
        self.called_at: list[float] = []  # monotonic time of each call
        self.batches: list[int] = []

    def routes(self) -> Sequence[Route]:
        if self.batched:  # the same behaviours through a batch route
            return [Route(STREAM_BENCH, (self.inp.wildcard,),
                          batch_handler=self.handle_batch, model=Ping, batch=64,
                          durable=self.durable, retry=self.retry or RetryPolicy())]
        return [Route(STREAM_BENCH, (self.inp.wildcard,), self.handle, model=Ping,
                      durable=self.durable, retry=self.retry or RetryPolicy())]

    async def handle_batch(
        self, inbounds: Sequence[Inbound[Ping]]
    ) -> list[Sequence[Outbound] | BaseException]:
        self.batches.append(len(inbounds))
        results: list[Sequence[Outbound] | BaseException] = []
        for inbound in inbounds:
            try:
                results.append(await self.handle(inbound))
            except (TransientError, PermanentError) as exc:  # UnavailableError too
                results.append(exc)
        return results

    async def start(self, ctx: StageContext) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def handle(self, inbound: Inbound[Ping]) -> Sequence[Outbound]:
        ping = inbound.body()
        self.calls.append((ping.request_id, inbound.deliveries))
        self.called_at.append(time.monotonic())
        if ping.behaviour == "transient" or (ping.behaviour == "flaky" and inbound.deliveries == 1):
            raise TransientError("internal", "backend unavailable")
        if ping.behaviour == "permanent":
            raise PermanentError("unsupported_audio", "this payload can never work")
        if ping.behaviour == "unavailable" and self.down:
            raise UnavailableError("internal", "the test dependency is down", reason="test_dep")
        calls = [r for r, _ in self.calls].count(ping.request_id)
        if ping.behaviour == "busy_twice" and calls <= 2:
            raise TransientError("internal", "busy", delay=0.05)
        if ping.behaviour == "slow":
            await asyncio.sleep(ping.seconds)
        out = ping.model_copy(
            update={"event_id": derive_id(inbound.workspace_id, ping.request_id, self.name), "hop": ping.hop + 1}
        )
        outbound = Outbound.of(self.out.for_workspace(inbound.workspace_id), out)
        if ping.behaviour == "die_after_publish" and inbound.deliveries == 1:
            await inbound.emit(outbound)
            os.kill(os.getpid(), signal.SIGKILL)
        if ping.behaviour == "emit_then_fail" and inbound.deliveries == 1:
            await inbound.emit(outbound)
            raise TransientError("internal", "failed after publishing")
        return [outbound]


CONSUMER = StageConsumer("passthrough", STREAM_BENCH, "passthrough-hop1")
"""The durable of the pass-through stage when it runs from a registry (``build_stage``)."""


def build_stage(settings: Settings) -> PassThrough:
    """What a registry entry for this test-only stage builds."""
    return PassThrough(durable=CONSUMER.durable)


async def _main() -> None:
    from mumu.logs import configure_logging
    from mumu.runtime.process import install_signal_handlers, run_stage

    settings = Settings()
    configure_logging(settings.log_level)
    stop = asyncio.Event()
    install_signal_handlers(stop)
    started = asyncio.Event()
    task = asyncio.create_task(run_stage(PassThrough(), settings, stop, started=started))
    await started.wait()
    print("consuming", flush=True)
    await task


if __name__ == "__main__":
    asyncio.run(_main())

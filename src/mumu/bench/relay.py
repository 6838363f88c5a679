"""The relay stage of `mumu bench runtime`: hop<n> → hop<n+1>, validated and re-emitted."""

from __future__ import annotations

from collections.abc import Sequence

from mumu.bench.stream import BENCH_HOPS, STREAM_BENCH
from mumu.contracts.events import Event
from mumu.runtime import Inbound, Outbound, Route, StageContext


class BenchEvent(Event):
    seq: int
    hop: int = 0
    padding: str = ""


class Relay:
    def __init__(self, hop: int) -> None:
        self.name = f"bench-relay{hop}"
        self.src = BENCH_HOPS[hop]
        self.dst = BENCH_HOPS[hop + 1]

    def routes(self) -> Sequence[Route]:
        return [Route(STREAM_BENCH, (self.src.wildcard,), self.handle, model=BenchEvent)]

    async def start(self, ctx: StageContext) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def handle(self, inbound: Inbound[BenchEvent]) -> Sequence[Outbound]:
        event = inbound.body()
        out = event.model_copy(update={"hop": event.hop + 1})
        return [
            Outbound(
                subject=self.dst.for_workspace(inbound.workspace_id),
                payload=out.model_dump_json().encode(),
                msg_id=f"{event.event_id}:{self.dst.prefix}",
            )
        ]

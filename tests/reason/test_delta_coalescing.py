"""Deltas are coalesced: the first token goes out at once, later text is gathered for
``interval`` seconds or ``max_chunks`` chunks (no server: the stream's own emit)."""

from __future__ import annotations

import asyncio

from mumu.runtime.messages import Outbound
from mumu.stages.reason.streaming import DeltaStream


async def test_tokens_arriving_faster_than_the_interval_leave_in_fewer_deltas() -> None:
    sent: list[tuple[int, str]] = []

    async def emit(out: Outbound) -> None:
        sent.append((int(out.msg_id), out.payload.decode()))

    def make(index: int, text: str) -> Outbound:
        return Outbound("s", text.encode(), str(index))

    stream = DeltaStream(emit, make, interval=0.2, max_chunks=100)
    runner = asyncio.create_task(stream.run())
    tokens = [f" t{i}" for i in range(20)]
    for token in tokens:
        stream.add(token)
        await asyncio.sleep(0.005)  # 20 tokens in about 0.1 s: within one interval
    stream.close()
    await asyncio.wait_for(runner, 5)
    assert "".join(text for _, text in sent) == "".join(tokens)
    assert [i for i, _ in sent] == list(range(len(sent)))
    assert sent[0][1] == " t0"  # the first token at once
    assert len(sent) <= 3  # the other 19 gathered, not one delta each


async def test_max_chunks_bounds_a_delta() -> None:
    sent: list[str] = []

    async def emit(out: Outbound) -> None:
        sent.append(out.payload.decode())

    stream = DeltaStream(emit, lambda i, t: Outbound("s", t.encode(), str(i)), interval=10.0,
                         max_chunks=4)
    runner = asyncio.create_task(stream.run())
    for i in range(13):
        stream.add(f"{i},")
        await asyncio.sleep(0)
    stream.close()
    await asyncio.wait_for(runner, 5)
    assert "".join(sent) == "".join(f"{i}," for i in range(13))
    assert all(chunk.count(",") <= 4 for chunk in sent)

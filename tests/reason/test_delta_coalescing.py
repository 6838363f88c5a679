"""Deltas are coalesced: the first token goes out at once, later text is gathered for
``interval`` seconds or ``max_chunks`` chunks (no server: the stream's own emit)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator

import pytest

from mumu.runtime.messages import Outbound
from mumu.stages.reason.backend import BackendInterruptedError, ChatRequest
from mumu.stages.reason.streaming import DeltaStream, generate


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


async def test_a_failed_answer_ends_even_when_the_publishers_cancel_is_lost() -> None:
    """The backend fails while a delta's publish is waiting for its PubAck, and that
    publish swallows the cancel (as 3.11's ``wait_for`` in nats-py does when the PubAck
    lands with it): the answer still ends with the backend's error, it does not hang."""
    acked = asyncio.Event()
    publishing = asyncio.Event()
    sent: list[str] = []

    async def emit(out: Outbound) -> None:
        publishing.set()
        with contextlib.suppress(asyncio.CancelledError):  # the lost cancel: the PubAck
            await acked.wait()  # "arrived" with it
        sent.append(out.payload.decode())

    class Failing:
        model = "failing"

        async def stream(self, request: ChatRequest) -> AsyncGenerator[str, None]:
            yield "first"
            await publishing.wait()  # the first delta's publish is in flight
            raise BackendInterruptedError("cut short", cut_short=True)

    deltas = DeltaStream(emit, lambda i, t: Outbound("s", t.encode(), str(i)), interval=0.01,
                         max_chunks=4)
    request = ChatRequest(request_id="r", messages=[], max_tokens=8, temperature=0.0)
    with pytest.raises(BackendInterruptedError):
        await asyncio.wait_for(
            generate(Failing(), request, deltas, asyncio.Event(), 0.0), 5)
    assert sent == ["first"]  # the one in flight; nothing after the failure

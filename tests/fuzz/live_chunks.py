"""Generated live streams: a valid ``LiveStart`` whose chunks carry random PCM (odd
lengths too) and any ``Mumu-Chunk-Seq``: in order, repeated, with gaps, absent, or no
integer at all, the end marked or not. Each stream must settle once: the start acked (its
end reached) or one dead letter, ``schema_violation`` (a sequence that is no integer) or
``stream_timeout`` (no end before the idle timeout), as ``expected_code`` works out."""

from __future__ import annotations

import asyncio
import uuid

from hypothesis import strategies as st
from nats.aio.client import Client as NATS

from mumu.contracts import headers as h
from mumu.contracts import subjects
from mumu.contracts.consumers import TRANSCRIBE_LIVE
from mumu.contracts.events import LiveStart
from tests.fuzz.deadletters import empty_dead_letters, run_examples
from tests.harness import Collector

GARBAGE_SEQ = ("abc", "-", "1.5", "", "0x2", "\u0663", "NaN")
"""Mostly no integer (``expected_code`` asks ``int()``: "\u0663", an Arabic-Indic three,
is one)."""
Chunk = tuple[bytes, str | None, bool]
"""(PCM bytes, the Mumu-Chunk-Seq header or None, whether it says Mumu-Stream-End)."""

chunk = st.tuples(
    st.binary(max_size=3001),
    st.one_of(st.none(), st.integers(-2, 8).map(str), st.sampled_from(GARBAGE_SEQ)),
    st.booleans(),
)
streams = st.lists(chunk, min_size=1, max_size=6)


def is_int(raw: str) -> bool:
    try:
        int(raw)
    except ValueError:
        return False
    return True


def expected_code(chunks: list[Chunk]) -> str | None:
    """What the stage must make of the stream (the route's reading of a stream): chunks in
    sequence order, a repeat dropped, one after a gap held until the gap fills (the chunks
    here are published at once, well within ``gap_wait``) and then, the gap given up,
    taken in order; a sequence number that is no integer ends the stream at once."""
    following = 1
    held: dict[int, bool] = {}
    for _, raw, end in chunks:
        if raw is not None and not is_int(raw):
            return "schema_violation"
        seq = following if raw is None else int(raw)
        if seq < following or seq in held:
            continue  # a repeat
        held[seq] = end
        while following in held:  # in order from the next one expected
            if held.pop(following):
                return None
            following += 1
    # the gap is given up: what is held is taken in order
    return None if any(held.values()) else "stream_timeout"


def start(ws: str, stream_id: str) -> LiveStart:
    return LiveStart(event_id=str(uuid.uuid4()), request_id=f"live{uuid.uuid4().hex[:12]}",
                     workspace_id=ws, session_id="s-fuzz", stream_id=stream_id)


async def settled(nc: NATS, timeout: float) -> None:
    """The live durable holds nothing: every start acked or terminated."""
    js = nc.jetstream()
    async with asyncio.timeout(timeout):
        while True:
            info = await js.consumer_info(subjects.STREAM_INGEST, TRANSCRIBE_LIVE.durable)
            if not info.num_pending and not info.num_ack_pending:
                return
            await asyncio.sleep(0.05)


async def stream_once(nc: NATS, ws: str, chunks: list[Chunk], letters: Collector,
                      idle_timeout: float) -> list[str]:
    """Publish a start and ``chunks``; once the live durable has settled it, the codes of
    the stream's dead letters (``letters`` collects ``mumu.dlq.transcribe``)."""
    js = nc.jetstream()
    stream_id = uuid.uuid4().hex
    began = start(ws, stream_id)
    await js.publish(subjects.INGEST_LIVE.for_workspace(ws), began.model_dump_json().encode())
    for data, raw, end in chunks:
        headers = {h.STREAM_END: "true"} if end else {}
        if raw is not None:
            headers[h.CHUNK_SEQ] = raw
        await js.publish(subjects.live_chunk(stream_id, ws), data, headers=headers)
    await settled(nc, idle_timeout + 30)
    return [m.headers[h.DLQ_CODE] for m in letters.messages
            if began.request_id.encode() in m.data]


async def fuzz_live_chunks(nc: NATS, ws: str, count: int, idle_timeout: float) -> set[str]:
    """``count`` generated streams, each settled as ``expected_code`` says; then a valid
    stream still settles. Returns the outcomes seen (codes, "acked")."""
    loop = asyncio.get_running_loop()
    outcomes: set[str] = set()
    async with Collector(nc, subjects.DLQ.stage("transcribe").wildcard) as letters:

        async def one(chunks: list[Chunk]) -> None:
            codes = await stream_once(nc, ws, chunks, letters, idle_timeout)
            want = expected_code(chunks)
            assert codes == ([want] if want else []), (chunks, codes)
            outcomes.add(want or "acked")
            await empty_dead_letters(nc, "transcribe")

        await asyncio.to_thread(run_examples, loop, streams, one, count, idle_timeout + 60)
        silence = bytes(3200)
        assert await stream_once(nc, ws, [(silence, "1", True)], letters, idle_timeout) == []
    return outcomes

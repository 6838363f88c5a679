"""`mumu streams status` and `mumu exporter` on a real nats-server: per consumer its pending,
ack pending, redelivered, ack floor, oldest unacked age and waiting pulls; per stream (and
bucket) how full it is; the same figures as Prometheus gauges from the exporter's own
read-only NATS user."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import nats.errors
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy, ConsumerConfig, KeyValueConfig, StreamConfig
from prometheus_client.parser import text_string_to_metric_families

from mumu.broker.connect import connect
from mumu.broker.embedded import EmbeddedNats
from mumu.broker.streams import apply_all
from mumu.broker.workspaces import ensure_workspaces
from mumu.cli.streams import render_status
from mumu.contracts import subjects
from mumu.ops.exporter import run_exporter
from mumu.ops.status import Status, gather
from mumu.settings import Settings
from tests.ops.test_dlq_and_replay import mumu

WS = "ws-status"
DURABLE = "status-test-finals"
IDLE = "status-test-idle"
SMALL = "STATUS_SMALL"


@dataclass
class Backlog:
    first_seq: int
    """Stream sequence of the first transcript (acked by the scene)."""


async def _scene(nc: NATS) -> Backlog:
    """On MUMU_RESULTS: a durable consumer with 5 transcripts; the first is 1 s older and
    acked, the second is delivered twice and unacked, three wait; a second durable has a
    pull request waiting. A stream limited to 10 messages holds 9."""
    js = nc.jetstream()
    subject = subjects.TRANSCRIPT_FINAL.for_workspace(WS)
    await js.add_consumer(subjects.STREAM_RESULTS, ConsumerConfig(
        durable_name=DURABLE, ack_policy=AckPolicy.EXPLICIT, filter_subject=subject,
        ack_wait=60))
    first = await js.publish(subject, b'{"n":1}')
    await asyncio.sleep(1.0)  # the first message is a second older than the rest
    for n in range(2, 6):
        await js.publish(subject, f'{{"n":{n}}}'.encode())
    await js.add_stream(StreamConfig(name=SMALL, subjects=["status.small"], max_msgs=10))
    for _ in range(9):
        await js.publish("status.small", b"x")
    # letters kept in MUMU_DLQ: counted per stage over the workspaces
    for stage, ws in (("ingest", "ws-a"), ("ingest", "ws-b"), ("reason", "ws-a")):
        await js.publish(subjects.DLQ.stage(stage).for_workspace(ws), b"letter")
    return Backlog(first.seq)


async def _take_two(nc: NATS) -> None:
    """Ack the first transcript; the second is delivered, nak'ed, delivered again, kept."""
    psub = await nc.jetstream().pull_subscribe_bind(DURABLE, subjects.STREAM_RESULTS)
    one, two = await psub.fetch(2, timeout=5)
    await one.ack_sync()
    # a nak the server confirms (as ``ack_sync`` does an ack): it is in the redelivery
    # queue before the next pull, which a pull served first would miss (the third message)
    assert two.reply
    await nc.request(two.reply, b"-NAK", timeout=5)
    (again,) = await psub.fetch(1, timeout=5)
    assert again.metadata.num_delivered == 2


@contextlib.asynccontextmanager
async def waiting_pull(nc: NATS) -> AsyncIterator[None]:
    """A pull request waiting on a durable that has nothing to deliver."""
    js = nc.jetstream()
    await js.add_consumer(subjects.STREAM_RESULTS, ConsumerConfig(
        durable_name=IDLE, ack_policy=AckPolicy.EXPLICIT,
        filter_subject=subjects.ANSWER_FINAL.for_workspace(WS)))
    psub = await js.pull_subscribe_bind(IDLE, subjects.STREAM_RESULTS)
    fetch = asyncio.ensure_future(psub.fetch(1, timeout=30))
    try:
        for _ in range(100):  # until the server has the request
            info = await js.consumer_info(subjects.STREAM_RESULTS, IDLE)
            if info.num_waiting:
                break
            await asyncio.sleep(0.05)
        yield
    finally:
        fetch.cancel()
        with contextlib.suppress(BaseException):
            await fetch


def _consumer(status: Status, name: str) -> dict[str, object]:
    (found,) = [c.as_json() for c in status.consumers if c.name == name]
    return found


async def test_status_gives_each_consumers_backlog_and_each_streams_fullness(
    nc: NATS, streams: None
) -> None:
    scene = await _scene(nc)
    before = await gather(nc)
    # nothing acked yet: the oldest unacked message is the first one, over a second old
    old = _consumer(before, DURABLE)
    assert old["pending"] == 5 and old["ack_pending"] == 0
    assert isinstance(old["oldest_unacked_age"], float) and old["oldest_unacked_age"] >= 1.0

    await _take_two(nc)
    async with waiting_pull(nc):
        status = await gather(nc)
    got = _consumer(status, DURABLE)
    age = got.pop("oldest_unacked_age")
    assert got == {
        "stream": subjects.STREAM_RESULTS, "name": DURABLE, "durable": True,
        "pending": 3, "ack_pending": 1, "redelivered": 1, "ack_floor": scene.first_seq,
        "waiting_pulls": 0,
    }
    # the oldest unacked one is now the second message: younger than the acked first
    assert isinstance(age, float) and 0.0 <= age < 1.0
    assert _consumer(status, IDLE)["waiting_pulls"] == 1
    assert _consumer(status, IDLE)["oldest_unacked_age"] is None

    assert status.dead_letters == (("ingest", 2), ("reason", 1))
    by_name = {s.name: s for s in status.streams}
    assert by_name[SMALL].fullness == pytest.approx(0.9)
    assert by_name[SMALL].as_json()["fullness_percent"] == 90.0
    results = by_name[subjects.STREAM_RESULTS]
    assert results.max_bytes is not None
    assert results.fullness == pytest.approx(results.bytes / results.max_bytes)
    # buckets are streams too: the sessions KV and the audio object store are listed
    assert by_name[f"KV_{subjects.BUCKET_SESSIONS}"].kind == "kv"
    assert by_name[f"OBJ_{subjects.BUCKET_AUDIO}"].kind == "object_store"
    assert by_name[f"KV_{subjects.BUCKET_SESSIONS}"].fullness is not None


async def test_a_bucket_filling_up_shows_in_its_fullness(nc: NATS) -> None:
    kv = await nc.jetstream().create_key_value(
        KeyValueConfig(bucket="status-fill", max_bytes=4096, history=1))
    await kv.put("a", b"x" * 1000)
    first = {s.name: s for s in (await gather(nc)).streams}["KV_status-fill"]
    await kv.put("b", b"x" * 1000)
    second = {s.name: s for s in (await gather(nc)).streams}["KV_status-fill"]
    assert first.fullness is not None and second.fullness is not None
    assert 0.2 < first.fullness < second.fullness < 0.6
    assert second.fullness == pytest.approx(second.bytes / 4096)


async def test_the_cli_prints_the_figures_as_a_table_and_as_json(
    nats_server: EmbeddedNats, nc: NATS, streams: None
) -> None:
    scene = await _scene(nc)
    await _take_two(nc)
    code, out = await mumu(nats_server, "streams", "status", "--json")
    assert code == 0, out
    data = json.loads(out)
    (row,) = [c for c in data["consumers"] if c["name"] == DURABLE]
    assert (row["pending"], row["ack_pending"], row["redelivered"], row["ack_floor"]) == (
        3, 1, 1, scene.first_seq)
    (small,) = [s for s in data["streams"] if s["name"] == SMALL]
    assert small["fullness_percent"] == 90.0
    assert data["dead_letters"] == {"ingest": 2, "reason": 1}
    code, out = await mumu(nats_server, "streams", "status")
    assert code == 0, out
    line = next(row for row in out.splitlines() if row.startswith(SMALL))
    assert line.split()[-2:] == ["90.0%", "0"]
    line = next(row for row in out.splitlines() if DURABLE in row)
    assert line.split()[2:6] == ["3", "1", "1", str(scene.first_seq)]


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        assert resp.status == 200
        return _samples(await resp.text())


@contextlib.asynccontextmanager
async def exporter(settings: Settings) -> AsyncIterator[tuple[str, asyncio.Task[None]]]:
    """``mumu exporter`` on a free port, reading every 0.2 s: (its base URL, its task)."""
    stop, started, bound = asyncio.Event(), asyncio.Event(), list[int]()
    task = asyncio.create_task(run_exporter(
        settings, "127.0.0.1", 0, 0.2, stop, started=started, bound=bound))
    try:
        await asyncio.wait_for(started.wait(), 10)
        yield f"http://127.0.0.1:{bound[0]}", task
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def test_the_exporter_serves_every_consumer_and_stream_as_gauges(
    nc: NATS, streams: None, settings: Settings
) -> None:
    await _scene(nc)
    await _take_two(nc)
    async with exporter(settings) as (base, _):
        url = f"{base}/metrics"
        got = await _scrape(url)
        consumer = (("consumer", DURABLE), ("stream", subjects.STREAM_RESULTS))
        assert got[("mumu_jetstream_consumer_pending", consumer)] == 3
        assert got[("mumu_jetstream_consumer_ack_pending", consumer)] == 1
        assert got[("mumu_jetstream_consumer_redelivered", consumer)] == 1
        assert got[("mumu_jetstream_consumer_oldest_unacked_age_seconds", consumer)] < 1.0
        small = (("kind", "stream"), ("stream", SMALL))
        assert got[("mumu_jetstream_stream_fullness_ratio", small)] == pytest.approx(0.9)
        assert got[("mumu_jetstream_stream_max_messages", small)] == 10
        kv = (("kind", "kv"), ("stream", f"KV_{subjects.BUCKET_SESSIONS}"))
        assert ("mumu_jetstream_stream_fullness_ratio", kv) in got
        # every stage's durable consumer, read from one place
        names = {dict(labels).get("consumer") for (name, labels) in got
                 if name == "mumu_jetstream_consumer_pending"}
        assert DURABLE in names
        assert got[("mumu_dlq_letters", (("stage", "ingest"),))] == 2
        build = [labels for (name, labels) in got if name == "mumu_build_info"]
        assert [dict(b)["component"] for b in build] == ["exporter"]
        # the next reading follows the stream
        await nc.jetstream().publish("status.small", b"x")
        async with asyncio.timeout(10):
            while (await _scrape(url))[("mumu_jetstream_stream_fullness_ratio", small)] < 1:
                await asyncio.sleep(0.1)
        assert (await _scrape(url))[("mumu_exporter_poll_errors_total", ())] == 0


async def test_the_exporters_nats_user_only_reads(settings: Settings, streams: None) -> None:
    exporter = await connect(settings.nats, name="test-exporter", role="exporter")
    try:
        status = await gather(exporter)  # everything it exports, it may read
        assert subjects.STREAM_RESULTS in {s.name for s in status.streams}
        js = exporter.jetstream()
        with pytest.raises((nats.errors.Error, TimeoutError)):
            await js.publish(subjects.ANSWER_FINAL.for_workspace(WS), b"{}", timeout=1)
        with pytest.raises((nats.errors.Error, TimeoutError)):
            await js.delete_stream(subjects.STREAM_RESULTS)
    finally:
        await exporter.close()
    assert await nc_stream_exists(settings)


async def nc_stream_exists(settings: Settings) -> bool:
    nc = await connect(settings.nats, name="test-check")
    try:
        return bool(await nc.jetstream().stream_info(subjects.STREAM_RESULTS))
    finally:
        await nc.close()


async def test_the_exporter_counts_failed_readings_when_nats_is_gone_and_says_not_ready(
    nats_server: EmbeddedNats, settings: Settings
) -> None:
    own = await connect(settings.nats, name="test-apply")  # not the `nc` fixture: the
    try:  # server goes away below
        await apply_all(own)
    finally:
        await own.close()
    async with exporter(settings) as (base, task):
        before = await _scrape(f"{base}/metrics")
        assert before[("mumu_exporter_poll_errors_total", ())] == 0
        await nats_server.stop()
        async with asyncio.timeout(30):
            while (await _scrape(f"{base}/metrics"))[("mumu_exporter_poll_errors_total", ())] < 1:
                await asyncio.sleep(0.2)
        after = await _scrape(f"{base}/metrics")
        # the last reading is still served, and its time stops moving (the alert's clue)
        stamp = ("mumu_exporter_last_poll_timestamp_seconds", ())
        await asyncio.sleep(0.5)  # more than two intervals: every reading fails
        assert (await _scrape(f"{base}/metrics"))[stamp] == after[stamp]
        assert ("mumu_jetstream_stream_messages",
                (("kind", "stream"), ("stream", subjects.STREAM_RESULTS))) in after
        async with aiohttp.ClientSession() as http, http.get(f"{base}/ready") as resp:
            assert resp.status == 503
            assert "nats: not connected" in (await resp.json())["reasons"]
        assert not task.done()  # it keeps trying


async def test_a_source_that_stops_shows_in_status_and_in_the_exporter(
    nc: NATS, streams: None, settings: Settings
) -> None:
    """``MUMU_INGEST`` sources each workspace's intake stream and hears from each every
    second while sourcing works; one that stops (here: its intake stream is deleted) goes
    silent, with the server's error: what `MumuSourceStalled` watches."""
    kept, lost = "ws-src-kept", "ws-src-lost"
    await ensure_workspaces(nc, [kept, lost])
    async with exporter(settings) as (base, _):
        url = f"{base}/metrics"

        def silent(got: dict[tuple[str, tuple[tuple[str, str], ...]], float], ws: str
                   ) -> float | None:
            labels = (("source", subjects.intake_stream(ws)), ("stream", subjects.STREAM_INGEST))
            return got.get(("mumu_jetstream_source_silent_seconds", labels))

        async with asyncio.timeout(10):  # both heard from: sourcing works
            while True:
                got = await _scrape(url)
                if all((s := silent(got, ws)) is not None and s < 2 for ws in (kept, lost)):
                    break
                await asyncio.sleep(0.2)
        await nc.jetstream().delete_stream(subjects.intake_stream(lost))
        async with asyncio.timeout(30):
            while (silent(got := await _scrape(url), lost) or 0) < 4:
                await asyncio.sleep(0.2)
        assert (silent(got, kept) or 99) < 2
        lag = (("source", subjects.intake_stream(kept)), ("stream", subjects.STREAM_INGEST))
        assert got[("mumu_jetstream_source_lag", lag)] == 0
    async with asyncio.timeout(30):  # the server names the cause once it retried
        while not (status := await gather(nc)).sources or not any(
                f.error for f in status.sources if f.source == subjects.intake_stream(lost)):
            await asyncio.sleep(0.5)
    by_source = {f.source: f for f in status.sources}
    assert by_source[subjects.intake_stream(lost)].error == "stream not found"
    assert by_source[subjects.intake_stream(kept)].error == ""
    table = render_status(status)
    assert f"{subjects.STREAM_INGEST}  {subjects.intake_stream(lost)}" in table
    assert "stream not found" in table

"""Hypothesis-generated bad messages into ingest (its request headers) and persist (final
transcripts and answers), on a real nats-server (and for persist a real PostgreSQL): no
stage crashes or stalls, every bad message ends as exactly one dead letter with a reason,
and a valid message after them still flows."""

from __future__ import annotations

import pytest
from hypothesis import strategies as st
from nats.aio.client import Client as NATS

from mumu.contracts import headers as h
from mumu.contracts import subjects
from mumu.contracts.events import AnswerFinal, TranscriptFinal, new_id
from mumu.runtime import PermanentError
from mumu.settings import Settings
from mumu.stages.ingest.request import parse_headers
from mumu.stages.ingest.stage import build_stage as build_ingest
from mumu.stages.persist.stage import build_stage as build_persist
from tests.conftest import Ensure
from tests.fuzz.deadletters import fuzz_stage, payloads
from tests.fuzz.header_strategies import invalid_ingest_headers, valid_headers
from tests.fuzz.ingest_outcomes import a_valid_clip_still_flows
from tests.fuzz.strategies import invalid_events
from tests.harness import Collector, running
from tests.persist.events import answer, merged, publish, transcript
from tests.pg_fixtures import WorkspaceFactory

pytestmark = [pytest.mark.fuzz, pytest.mark.slow, pytest.mark.timeout(400)]


def test_a_header_given_twice_with_two_values_is_refused() -> None:
    """Names differ only in case: which value the producer meant is unknown."""
    twice = {**valid_headers("r1"), "mumu-session": "s-other"}
    with pytest.raises(PermanentError) as refused:
        parse_headers(twice)
    assert refused.value.code == "schema_violation"
    assert "given twice" in refused.value.message
    same = {**valid_headers("r1"), "mumu-session": "s-fuzz"}  # the same value: no doubt
    assert parse_headers(same).session_id == "s-fuzz"


async def test_bad_request_headers_into_ingest(
    nc: NATS, streams: None, workspaces: Ensure, settings: Settings,
) -> None:
    ws = "ws-fuzz-headers"
    await workspaces(ws)
    codes: set[str] = set()
    async with running(build_ingest(settings), settings) as task, \
            Collector(nc, "mumu.>") as seen:
        letters = await fuzz_stage(
            nc, "ingest", subjects.INGEST_AUDIO.for_workspace(ws),
            st.builds(new_id).flatmap(invalid_ingest_headers),
            lambda: a_valid_clip_still_flows(nc, seen, ws))
        codes = {m.headers[h.DLQ_CODE] for m in letters}
        assert not task.done(), "the stage is still running"
    # the examples broke the headers in more than one way, and each was named as such
    assert codes <= {"missing_header", "schema_violation"}, codes
    assert len(codes) == 2, codes


async def test_bad_finals_into_persist(
    nc: NATS, streams: None, settings: Settings, pg_settings: Settings,
    workspace: WorkspaceFactory,
) -> None:
    ws, _ = await workspace("fuzz")
    cfg = merged(settings, pg_settings, batch_rows=16, pool_max=2)

    async def stored(event: TranscriptFinal | AnswerFinal) -> None:
        async with Collector(nc, subjects.PERSISTED.for_workspace(ws)) as confirmed:
            await publish(nc, event)
            await confirmed.wait_for(lambda ms: any(
                m.json()["source_event_id"] == event.event_id for m in ms), 30)

    said, answered = transcript(ws, "fuzzed"), answer(ws, "fuzzed", "fine")
    async with running(build_persist(cfg), cfg) as task:
        await fuzz_stage(
            nc, "persist", subjects.TRANSCRIPT_FINAL.for_workspace(ws),
            payloads(invalid_events(TranscriptFinal, said)),
            lambda: stored(transcript(ws, "still stored")), count=30)
        await fuzz_stage(
            nc, "persist", subjects.ANSWER_FINAL.for_workspace(ws),
            payloads(invalid_events(AnswerFinal, answered)),
            lambda: stored(answer(ws, "still", "stored")), count=30)
        # a body naming another workspace than its subject, whatever else it holds
        foreign = transcript(ws, "x").model_copy(update={"workspace_id": new_id()})
        await fuzz_stage(
            nc, "persist", subjects.TRANSCRIPT_FINAL.for_workspace(ws),
            payloads(st.just(foreign.model_dump_json().encode())),
            lambda: stored(transcript(ws, "again")), count=1)
        assert not task.done(), "the stage is still running"

"""The gateway's end-to-end latency histogram (fast, in memory): each milestone of a request
it accepted is observed once, in its kind; duplicates, other gateways' requests and errors
are not; the open requests stay bounded. The real pipeline's figures are checked in
test_tracing_pipeline.py."""

from __future__ import annotations

import json
from typing import Any

from nats.aio.msg import Msg
from prometheus_client import CollectorRegistry

from mumu.contracts import subjects
from mumu.gateway.telemetry import Milestones

WS = "ws-1"


def result(pattern: subjects.SubjectPattern, request_id: str) -> Msg:
    body = json.dumps({"request_id": request_id, "session_id": "s"}, separators=(",", ":"))
    return Msg(_client=None, subject=pattern.for_workspace(WS), data=body.encode())  # type: ignore[arg-type]


def counts(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    found: dict[tuple[str, str], float] = {}
    for family in registry.collect():
        for s in family.samples:
            if s.name == "mumu_e2e_latency_seconds_count":
                found[(s.labels["kind"], s.labels["milestone"])] = s.value
    return found


async def feed(milestones: Milestones, *msgs: Msg) -> list[Any]:
    passed: list[Any] = []

    async def on_message(_: int, subject: str, __: bytes, ___: float) -> None:
        passed.append(subject)

    wrapped = milestones.wrap(on_message)
    for n, msg in enumerate(msgs):
        await wrapped(n, msg.subject, msg.data, 0.0)
    return passed


async def test_each_milestone_of_an_accepted_request_is_observed_once() -> None:
    registry = CollectorRegistry()
    m = Milestones(registry)
    m.accepted("a1", "audio")
    m.accepted("t1", "text")
    passed = await feed(
        m, result(subjects.TRANSCRIPT_PARTIAL, "a1"), result(subjects.TRANSCRIPT_FINAL, "a1"),
        result(subjects.ANSWER_DELTA, "a1"), result(subjects.ANSWER_DELTA, "a1"),
        result(subjects.ANSWER_DELTA, "t1"), result(subjects.ANSWER_FINAL, "t1"),
        result(subjects.ANSWER_FINAL, "a1"), result(subjects.ANSWER_FINAL, "other"),
    )
    assert len(passed) == 8  # the hub still gets every result
    assert counts(registry) == {
        ("audio", "transcript_final"): 1, ("audio", "first_answer_delta"): 1,
        ("audio", "answer_final"): 1, ("text", "first_answer_delta"): 1,
        ("text", "answer_final"): 1,
    }
    assert len(m) == 0  # both ended with their answer


async def test_a_transcribe_only_request_ends_with_its_transcript_and_an_error_ends_one() -> None:
    registry = CollectorRegistry()
    m = Milestones(registry)
    m.accepted("a1", "audio", answer=False)
    m.accepted("a2", "audio")
    await feed(m, result(subjects.TRANSCRIPT_FINAL, "a1"), result(subjects.ERROR, "a2"),
         result(subjects.ANSWER_FINAL, "a2"))
    assert counts(registry) == {("audio", "transcript_final"): 1}
    assert len(m) == 0


def test_open_requests_are_bounded() -> None:
    m = Milestones(CollectorRegistry(), capacity=3, ttl=600)
    for n in range(10):
        m.accepted(f"r{n}", "text")
    assert len(m) == 3
    expired = Milestones(CollectorRegistry(), ttl=0.0)
    expired.accepted("r1", "text")
    expired.accepted("r2", "text")
    assert len(expired) == 1

"""The hub's routing of raw result messages, without a server (the feed's hot path)."""

from __future__ import annotations

import json

from mumu.contracts import subjects
from mumu.contracts.event_types import EventType
from mumu.contracts.events import AnswerDelta
from mumu.gateway.hub import Hub, ResultEvent


class Sink:
    def __init__(self) -> None:
        self.events: list[ResultEvent] = []

    async def push(self, event: ResultEvent) -> None:
        self.events.append(event)


def result(workspace: str, session: str, request: str, text: str = "hi") -> tuple[str, bytes]:
    """(subject, body) of a result, as the feed hands it on."""
    body = AnswerDelta(event_id=f"e-{request}", request_id=request, workspace_id=workspace,
                       session_id=session, index=0, text=text).model_dump_json()
    return subjects.ANSWER_DELTA.for_workspace(workspace), body.encode()


async def test_results_reach_the_sinks_of_their_session_and_only_those() -> None:
    hub, mine, twin, other = Hub(), Sink(), Sink(), Sink()
    hub.subscribe("ws1", "s1", mine)
    hub.subscribe("ws1", "s1", twin)
    hub.subscribe("ws1", "s1", twin)  # twice: still one delivery
    hub.subscribe("ws2", "s1", other)  # the same session id in another workspace
    await hub.on_message(7, *result("ws1", "s1", "r1"), 1.5)
    await hub.on_message(8, *result("ws1", "s2", "r2"), 1.5)  # nobody here wants it
    assert [e.cursor for e in mine.events] == [7] and [e.cursor for e in twin.events] == [7]
    assert other.events == [] and hub.dispatched == 1
    hub.unsubscribe("ws1", "s1", twin)
    await hub.on_message(9, *result("ws1", "s1", "r3"), 0.0)
    assert [e.cursor for e in mine.events] == [7, 9] and len(twin.events) == 1
    hub.unsubscribe("ws1", "s1", mine)
    assert hub.sessions == 1


async def test_an_event_carries_its_ids_and_its_frame_is_the_body_with_type_and_cursor() -> None:
    hub, sink = Hub(), Sink()
    hub.subscribe("ws1", "s1", sink)
    await hub.on_message(42, *result("ws1", "s1", "req-9", text='a "quoted" word'), 1.25)
    (event,) = sink.events
    assert (event.type, event.workspace_id, event.session_id) == (
        EventType.ANSWER_DELTA, "ws1", "s1")
    assert event.request_id == "req-9" and event.published_at == 1.25
    frame = json.loads(event.frame())
    assert frame == {"type": "answer.delta", "cursor": 42, **event.body}
    assert frame["text"] == 'a "quoted" word'


async def test_messages_that_are_not_events_are_skipped() -> None:
    hub, sink = Hub(), Sink()
    hub.subscribe("ws1", "s1", sink)
    subject, data = result("ws1", "s1", "r1")
    for bad in (("mumu.ingest.text.ws1", data), (subject, b"[1]"),
                (subject, b'{"session_id":"a.b"}')):
        await hub.on_message(1, *bad, 0.0)
    assert sink.events == [] and hub.dispatched == 0

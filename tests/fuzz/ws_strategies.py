"""Hypothesis strategies of websocket conversations: how the client authenticates (token in
the query, an ``auth`` message, a bad one, none, one sent too late), where it resumes from
(``?after=``), then any sequence of text and binary frames: valid and broken JSON, unknown
types, every client message type with valid and invalid fields (ask, audio frames and
``audio.end``, resume with a cursor of its own, of another client or garbage, cancel,
ping, auth again, ``stream.start`` / ``stream.end``) and frames over the size limit.

Values only known while the test runs are placeholders, replaced in the JSON text by
``fill``: ``"$token"`` (this socket's session token), ``"$other"`` (another workspace's),
``"$cursor"`` (the last cursor this socket got), ``"$foreign"`` (a cursor or request id
of the well-behaved client of another workspace)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from mumu.contracts.events import new_id
from tests.fuzz.strategies import NOT_A_STRING, ODD_TEXT

KNOWN = frozenset({"ask", "audio.end", "resume", "cancel", "ping", "auth", "stream.start",
                   "stream.end"})
AUTH_MODES = ("query", "message", "bad_message", "missing", "late", "bad_query")
PLACEHOLDERS = ("$token", "$other", "$cursor", "$foreign")


@dataclass(frozen=True)
class Frame:
    kind: str  # "text" or "binary"
    data: str | bytes = field(repr=False)

    def __repr__(self) -> str:
        return f"Frame({self.kind}, {self.data[:80]!r}{'...' if len(self.data) > 80 else ''})"


@dataclass(frozen=True)
class Conversation:
    auth: str
    after: str | None
    frames: list[Frame]


def text(message: Any) -> Frame:
    return Frame("text", json.dumps(message))


def fill(frame_text: str, values: dict[str, Any]) -> str:
    for name, value in values.items():
        frame_text = frame_text.replace(json.dumps(name), json.dumps(value))
    return frame_text


def certainly_bad(frame_text: str) -> bool:
    """A text frame no version of the protocol can accept: not a JSON object with a
    string ``type`` of a client message."""
    try:
        message = json.loads(frame_text)
    except ValueError:
        return True
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        return True
    return message["type"] not in KNOWN


ANY_VALUE = st.one_of(NOT_A_STRING, ODD_TEXT, st.sampled_from(PLACEHOLDERS))
ids = st.one_of(st.builds(new_id), ODD_TEXT, NOT_A_STRING, st.just("$foreign"))
cursors = st.one_of(st.integers(-3, 10**6), st.just(2**70), st.sampled_from(["$cursor", "$foreign"]),
                    NOT_A_STRING, ODD_TEXT)
question = st.one_of(st.sampled_from(["Say hi.", "", "   "]), ODD_TEXT, NOT_A_STRING,
                     st.integers(33_000, 33_001).map("x".__mul__))  # over MAX_TEXT_CHARS
options = st.fixed_dictionaries({}, optional={
    "language": st.one_of(st.sampled_from(["en", "xx", "english"]), NOT_A_STRING),
    "task": st.sampled_from(["transcribe", "translate", "sing"]),
    "beam_size": st.one_of(st.integers(-1, 30), ODD_TEXT),
    "answer": st.one_of(st.booleans(), ODD_TEXT),
})


def typed(kind: str, fields: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[Frame]:
    return fields.map(lambda f: text({"type": kind, **f}))


def frames(max_frame: int) -> st.SearchStrategy[Frame]:
    """One frame; ``max_frame``: the gateway's frame limit (a few frames go over it)."""
    messages = st.one_of(
        typed("ask", st.fixed_dictionaries({"text": question}, optional={"language": ANY_VALUE})),
        typed("audio.end", st.fixed_dictionaries(
            {"format": st.one_of(st.sampled_from(["webm", "wav", "ogg", "mp3"]), ANY_VALUE)})
            .flatmap(lambda f: options.map(lambda o: {**f, **o}))),
        typed("resume", st.fixed_dictionaries({"after": cursors})),
        typed("resume", st.just({})),
        typed("cancel", st.fixed_dictionaries({"request_id": ids})),
        typed("ping", st.just({})),
        typed("auth", st.fixed_dictionaries({"token": st.one_of(
            st.sampled_from(["$token", "$other", "garbage", "a.b.c"]), NOT_A_STRING)})),
        typed("stream.start", st.fixed_dictionaries({}, optional={
            "format": st.one_of(st.sampled_from(["pcm16", "webm"]), ANY_VALUE),
            "sample_rate": st.one_of(st.sampled_from([16_000, 0, -1, 10**9]), ANY_VALUE),
            "language": ANY_VALUE, "stream_id": ids})),
        typed("stream.end", st.fixed_dictionaries({}, optional={"stream_id": ids})),
        typed("", st.just({})),
        st.one_of(ODD_TEXT, NOT_A_STRING).filter(lambda t: not (isinstance(t, str) and t in KNOWN))
        .map(lambda t: text({"type": t})),
    )
    broken = st.one_of(
        ODD_TEXT.map(lambda t: Frame("text", t)),
        st.sampled_from(['{"type":', "[]", "null", '{"type":"ask"', "{}", '"ask"']).map(
            lambda t: Frame("text", t)),
        st.lists(st.integers(), max_size=3).map(text),
    )
    binary = st.binary(max_size=4096).map(lambda b: Frame("binary", b))
    over = st.integers(max_frame + 1, max_frame + 2)
    huge = st.one_of(over.map(lambda n: Frame("binary", bytes(n))),
                     over.map(lambda n: text({"type": "ask", "text": "y" * n})))
    return st.one_of(messages, messages, broken, binary, binary, huge)


def conversations(max_frame: int) -> st.SearchStrategy[Conversation]:
    return st.builds(
        Conversation,
        auth=st.sampled_from(AUTH_MODES),
        after=st.one_of(st.none(), st.none(), st.just("0"), st.just("$cursor"),
                        st.sampled_from(["abc", "-1", "1.5"])),
        frames=st.lists(frames(max_frame), max_size=6),
    )

"""The one parser of JetStream's ``$JS.ACK`` reply subjects.

v1: ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>``;
v2 adds domain and account hash after ``ACK`` and a random token at the end.
nats-py's ``msg.metadata`` parses every field into objects, several microseconds per
message; the hot paths (every stage message, every gateway result) read these instead.
"""

from __future__ import annotations

from typing import NamedTuple

PREFIX = "$JS.ACK."


class AckFields(NamedTuple):
    delivered: int
    stream_seq: int
    consumer_seq: int
    timestamp: float
    """Unix seconds the message was stored."""
    pending: int


def is_ack_subject(reply: str | None) -> bool:
    return reply is not None and reply.startswith(PREFIX)


def ack_fields(reply: str) -> AckFields:
    """The numeric fields of a ``$JS.ACK`` subject; ``ValueError`` when it is not one."""
    t = reply.split(".")
    if len(t) == 9:
        i = 4
    elif len(t) >= 11:
        i = 6
    else:
        raise ValueError(f"not a JetStream ack subject: {reply!r}")
    if t[0] != "$JS" or t[1] != "ACK":
        raise ValueError(f"not a JetStream ack subject: {reply!r}")
    try:
        return AckFields(int(t[i]), int(t[i + 1]), int(t[i + 2]), int(t[i + 3]) / 1e9,
                         int(t[i + 4]))
    except (IndexError, ValueError) as exc:
        raise ValueError(f"not a JetStream ack subject: {reply!r}") from exc


def feed_position(reply: str) -> tuple[int, int, float] | None:
    """(stream sequence, consumer sequence, stored at) of a push consumer's message, None
    when ``reply`` is not an ack subject (a status message): the gateway's live feed,
    per result, without the fields it does not read."""
    if not reply.startswith(PREFIX):
        return None
    t = reply.split(".")
    i = 5 if len(t) == 9 else 7 if len(t) >= 11 else 0
    if not i or not t[i - 1].isdigit() or not t[i + 3].isdigit():
        return None
    try:
        return int(t[i]), int(t[i + 1]), int(t[i + 2]) / 1e9
    except ValueError:
        return None


def delivery_of_reply(reply: str) -> tuple[int, int]:
    """(delivered, stream sequence) only: the stage runtime's per-message need, without
    parsing the other fields (``ValueError`` when ``reply`` is not an ack subject)."""
    t = reply.split(".", 9)
    i = 4 if len(t) == 9 else 6 if len(t) == 10 and "." in t[9] else 0
    if i and t[0] == "$JS" and t[1] == "ACK" and t[i].isdigit() and t[i + 1].isdigit():
        return int(t[i]), int(t[i + 1])
    raise ValueError(f"not a JetStream ack subject: {reply!r}")

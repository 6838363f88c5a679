"""What ``mumu replay`` selects: a stream or subject filter narrowed by workspace, request,
time and sequence; as server-side filters where the server can apply them, the rest as a
cheap per-message check."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from mumu.contracts import headers as h
from mumu.contracts.subject_check import covers
from mumu.contracts.subjects import REPLAY_PREFIX, is_replay, last_token

_RELATIVE = re.compile(r"^-?(\d+(?:\.\d+)?)(ms|s|m|h|d|w)$")
REPLAYS = f"{REPLAY_PREFIX}.>"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(value: str, now: datetime | None = None) -> datetime:
    """RFC 3339 (``2026-12-03T09:15:00Z``), or relative to now (``-15m``, ``2h``, ``-1d``)."""
    match = _RELATIVE.match(value.strip())
    if match:
        ago = float(match.group(1)) * _UNITS[match.group(2)]
        return (now or datetime.now(UTC)) - timedelta(seconds=ago)
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(
            f"not a time: {value!r} (RFC 3339 such as 2026-12-03T09:15:00Z, or -15m / -2h / -1d)"
        ) from exc
    if moment.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone (add Z or +00:00)")
    return moment.astimezone(UTC)


def to_ns(moment: datetime) -> int:
    """Unix nanoseconds of an aware datetime, exactly (no float rounding)."""
    delta = moment - EPOCH
    return (delta.days * 86400 + delta.seconds) * 10**9 + delta.microseconds * 1000


def from_ns(ns: int) -> datetime:
    """The datetime of Unix nanoseconds (to the microsecond, rounded down)."""
    return EPOCH + timedelta(microseconds=ns // 1000)


def overlaps(a: str, b: str) -> bool:
    """Whether two subject filters can match a common subject."""
    ta, tb = a.split("."), b.split(".")
    for i in range(max(len(ta), len(tb))):
        x = ta[i] if i < len(ta) else None
        y = tb[i] if i < len(tb) else None
        if x == ">" or y == ">":
            return x is not None and y is not None
        if x is None or y is None:
            return False
        if x not in (y, "*") and y != "*":
            return False
    return True


def is_stream_name(target: str) -> bool:
    """``MUMU_RESULTS`` names a stream; ``mumu.transcript.final.*`` is a subject filter."""
    return "." not in target and "*" not in target and ">" not in target


@dataclass(frozen=True)
class Selection:
    """Which stored messages a replay takes (JSON-able: a checkpoint stores it)."""

    target: str
    """A stream name, or a subject filter (wildcards allowed)."""
    workspace: str | None = None
    request_id: str | None = None
    since: str | None = None
    """RFC 3339 (normalised when the selection is made)."""
    until: str | None = None
    from_seq: int | None = None
    to_seq: int | None = None

    @classmethod
    def of(cls, target: str, *, workspace: str | None = None, request_id: str | None = None,
           since: str | None = None, until: str | None = None, from_seq: int | None = None,
           to_seq: int | None = None, now: datetime | None = None) -> Selection:
        """Validated; relative times become absolute now (a resumed replay keeps them)."""
        if workspace is not None and any(c in workspace for c in ".*> "):
            raise ValueError(f"invalid workspace: {workspace!r}")
        if (from_seq is not None and from_seq < 1) or (to_seq is not None and to_seq < 1):
            raise ValueError("sequences start at 1")
        if from_seq and to_seq and to_seq < from_seq:
            raise ValueError(f"--to-seq {to_seq} is before --from-seq {from_seq}")
        start = parse_time(since, now).isoformat() if since else None
        end = parse_time(until, now).isoformat() if until else None
        if start and end and end < start:
            raise ValueError("--until is before --since")
        return cls(target, workspace, request_id, start, end, from_seq, to_seq)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def since_time(self) -> datetime | None:
        return datetime.fromisoformat(self.since) if self.since else None

    @property
    def until_ns(self) -> int | None:
        """``until`` in Unix ns (compared with each message's stored time); inclusive to
        the microsecond, the precision of the times ``mumu replay`` prints."""
        return to_ns(datetime.fromisoformat(self.until)) + 999 if self.until else None

    def server_filters(self) -> list[str]:
        """Subject filters for the ordered consumer (empty: the whole stream)."""
        ws = self.workspace
        if is_stream_name(self.target):
            # every mumu subject has 3 to 5 tokens, the workspace last
            return [f"{'*.' * n}{ws}" for n in (2, 3, 4)] if ws else []
        tokens = self.target.split(".")
        if ws and tokens[-1] == "*":
            return [".".join([*tokens[:-1], ws])]
        return [self.target]

    def keeps_replays(self) -> bool:
        """Replay subjects (``mumu.replay.>``) are taken only when the filter names them."""
        return not is_stream_name(self.target) and self.target.startswith("mumu.replay")

    def wants(self, subject: str, data: bytes, headers: dict[str, str] | None) -> bool:
        """The checks the server cannot make (workspace under ``>``, request id)."""
        if self.workspace is not None and last_token(subject) != self.workspace:
            return False
        if is_replay(subject) and not self.keeps_replays():
            return False
        if self.request_id is not None:
            if headers and headers.get(h.REQUEST_ID) == self.request_id:
                return True
            return f'"request_id":"{self.request_id}"'.encode() in data
        return True

    def matches_subject(self, subject: str) -> bool:
        """Whether ``subject`` is inside the target filter (for records read from a file)."""
        if is_stream_name(self.target):
            return True
        return covers(self.target, subject)

    def takes(self, subject: str, data: bytes, headers: dict[str, str] | None, seq: int,
              ts: int) -> bool:
        """Every check at once, for a message read from an export file."""
        if not self.matches_subject(subject) or not self.wants(subject, data, headers):
            return False
        if self.from_seq is not None and seq < self.from_seq:
            return False
        if self.to_seq is not None and seq > self.to_seq:
            return False
        since, until = self.since_time, self.until_ns
        return (since is None or ts >= to_ns(since)) and (until is None or ts <= until)

    @property
    def needs_check(self) -> bool:
        """Whether ``wants`` must run on each message (else every delivered one is taken)."""
        if self.workspace is not None or self.request_id is not None:
            return True
        filters = self.server_filters() or [">"]
        return not self.keeps_replays() and any(overlaps(f, REPLAYS) for f in filters)

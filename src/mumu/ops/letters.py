"""Dead letters grouped for triage (``mumu dlq ls``) and a letter's body described
(``mumu dlq show``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client as NATS

from mumu.contracts import headers as h
from mumu.contracts import subjects
from mumu.contracts.audio_formats import sniff
from mumu.ops.dlq import dlq_subject
from mumu.ops.scan import scan
from mumu.ops.selection import Selection
from mumu.ops.sinks import iso

MSG_SIZE = "Nats-Msg-Size"
"""The body size the server reports on a headers-only delivery."""


@dataclass
class Group:
    """The dead letters of one stage for one reason (error code)."""

    stage: str
    code: str
    count: int = 0
    first_seq: int = 0
    first_ns: int = 0
    last_seq: int = 0
    last_ns: int = 0
    bytes: int = 0
    reason: str = ""
    """The latest letter's reason text."""
    subjects: dict[str, int] = field(default_factory=dict)
    """Original subject families (workspace dropped) and their counts."""

    def as_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "code": self.code, "count": self.count,
                "first_seq": self.first_seq, "first_time": iso(self.first_ns),
                "last_seq": self.last_seq, "last_time": iso(self.last_ns), "bytes": self.bytes,
                "reason": self.reason, "subjects": self.subjects}


@dataclass
class Grouper:
    groups: dict[tuple[str, str], Group] = field(default_factory=dict)

    async def put(self, subject: str, data: bytes, headers: dict[str, str] | None, seq: int,
                  ts: int) -> None:
        hdrs = headers or {}
        stage = hdrs.get(h.DLQ_STAGE) or subject.split(".")[2]
        code = hdrs.get(h.DLQ_CODE, "unknown")
        group = self.groups.get((stage, code))
        if group is None:
            group = self.groups[(stage, code)] = Group(stage, code, first_seq=seq, first_ns=ts)
        group.count += 1
        group.last_seq, group.last_ns = seq, ts
        group.reason = hdrs.get(h.DLQ_REASON, "")
        size = hdrs.get(h.DLQ_BODY_SIZE) or hdrs.get(MSG_SIZE)
        group.bytes += int(size) if size and size.isdigit() else len(data)
        family = hdrs.get(h.DLQ_SUBJECT, "?").rpartition(".")[0] + ".*"
        group.subjects[family] = group.subjects.get(family, 0) + 1


async def grouped(nc: NATS, stage: str | None = None, workspace: str | None = None,
                  ) -> list[Group]:
    """Every dead letter (of ``stage``, of ``workspace``) counted by stage and reason;
    bodies stay on the server (a headers-only ordered consumer)."""
    target = dlq_subject(stage, workspace)
    grouper = Grouper()
    await scan(nc, subjects.STREAM_DLQ, Selection(target), grouper.put, start=1,
               headers_only=True)
    return sorted(grouper.groups.values(), key=lambda g: (g.stage, -g.count, g.code))


def describe_body(data: bytes, headers: dict[str, str]) -> dict[str, Any]:
    """Content type, size and (for text) the body of a letter; binary bodies are not shown."""
    omitted = headers.get(h.DLQ_BODY_OMITTED) == "true"
    size = int(headers.get(h.DLQ_BODY_SIZE, "0")) if omitted else len(data)
    declared = (headers.get(f"{h.DLQ_ORIGINAL_PREFIX}{h.CONTENT_TYPE}")
                or headers.get(h.CONTENT_TYPE))
    body: dict[str, Any] = {"size": size, "omitted": omitted}
    if omitted:
        body["content_type"] = declared or "unknown"
        return body
    fmt = sniff(data)
    if fmt is not None:
        body.update(content_type=declared or fmt.content_type, binary=True, detected=fmt.name)
        return body
    try:
        body.update(content_type=declared or "application/json", binary=False,
                    json=json.loads(data))
    except (ValueError, UnicodeDecodeError):
        try:
            body.update(content_type=declared or "text/plain", binary=False, text=data.decode())
        except UnicodeDecodeError:
            body.update(content_type=declared or "application/octet-stream", binary=True)
    return body

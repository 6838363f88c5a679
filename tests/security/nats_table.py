"""Every NATS action workspace A's producer must be refused, generated from the contracts:
each subject family of ``mumu.contracts.subjects`` (for B, for the services, and A's own
where only services may act), every inbox, KV and Object Store bucket, and the JetStream
API on every stream. A name added to ``subjects`` that this module does not know makes
``unknown_names`` non-empty, and the suite fails until it is covered here.

What a producer MAY do is written here from DESIGN.md (publish its own intake, read its own
client-visible results), not read from ``broker/roles.py``: the table checks the roles.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from mumu.broker.roles import Role
from mumu.contracts import consumers, subjects
from mumu.contracts.event_types import EventType
from mumu.stages.registry import STAGES

Action = Literal["publish", "subscribe"]

MAY_PUBLISH = (subjects.INGEST_AUDIO, subjects.INGEST_TEXT, subjects.INGEST_LIVE)
"""A producer's own intake (DESIGN.md, "Tenancy and security on the broker")."""
MAY_READ = tuple(t.pattern for t in EventType)
"""A producer's own client-visible results."""

NOT_SUBJECTS = frozenset({"SubjectPattern", "StagePattern", "last_token", "is_replay",
                          "DLQ_MAX_LETTER"})
"""Public names of ``subjects`` that name no subject (a class, predicates)."""
COLLECTIONS = frozenset({"ALL_PATTERNS", "SHORT_LIVED"})
"""Tuples of patterns, each pattern covered on its own."""
HELPERS = frozenset({
    "INTAKE_STREAM_PREFIX", "intake_stream", "UPLOAD_BUCKET_PREFIX", "upload_bucket",
    "AUDIO_BUCKET_PREFIX", "audio_bucket", "ONCE_BUCKET_PREFIX", "once_bucket", "PRODUCER_INBOX", "producer_inbox_prefix",
    "SERVICE_INBOX", "service_inbox_prefix", "REPLAY_PREFIX", "replay_pattern",
    "LIVE_CHUNK_PREFIX", "LIVE_CHUNK_WILDCARD", "live_chunk", "DLQ_NO_WORKSPACE",
})
"""Names covered by their own rows below (per-workspace streams, buckets, inboxes...)."""

STREAM_OPS = ("INFO", "UPDATE", "DELETE", "PURGE", "MSG.GET", "MSG.DELETE", "SNAPSHOT",
              "RESTORE", "LEADER.STEPDOWN", "PEER.REMOVE")
CONSUMER_OPS = ("INFO", "DELETE", "MSG.NEXT", "PAUSE", "LEADER.STEPDOWN")
ACCOUNT_API = ("$JS.API.INFO", "$JS.API.STREAM.LIST", "$JS.API.STREAM.CREATE.STOLEN",
               "$JS.API.ACCOUNT.PURGE.x", "$JS.API.SERVER.REMOVE",
               "$JS.API.META.LEADER.STEPDOWN", "$JS.API.STREAM.TEMPLATE.NAMES")
WIDE_READS = (">", "mumu.>", "$JS.>", "$JS.API.>", "$JS.EVENT.>", "$JS.ACK.>", "$KV.>",
              "$O.>", "$SYS.>", "_INBOX.>", "_INBOX.*", f"{subjects.SERVICE_INBOX}.>")


@dataclass(frozen=True)
class Attack:
    family: str
    """The name in ``subjects`` (or the API) this attack covers."""
    action: Action
    subject: str


def patterns() -> dict[str, subjects.SubjectPattern]:
    return {name: value for name, value in vars(subjects).items()
            if isinstance(value, subjects.SubjectPattern)}


def stream_names() -> list[str]:
    return [value for name, value in vars(subjects).items()
            if name.startswith("STREAM_") and isinstance(value, str)]


def bucket_names() -> list[str]:
    return [value for name, value in vars(subjects).items()
            if name.startswith("BUCKET_") and isinstance(value, str)]


def unknown_names() -> set[str]:
    """Public names of ``subjects`` this table does not cover."""
    names = {n for n, v in vars(subjects).items() if not n.startswith("_")
             and (not inspect.ismodule(v)) and getattr(v, "__module__", subjects.__name__)
             in (subjects.__name__, "builtins", "typing")}
    names -= {"annotations", "Final", "dataclass"}
    covered = set(patterns()) | NOT_SUBJECTS | COLLECTIONS | HELPERS
    covered |= {n for n in names if n.startswith(("STREAM_", "BUCKET_"))}
    return names - covered


def _pattern_attacks(a: str, b: str) -> Iterator[Attack]:
    for name, pattern in patterns().items():
        if pattern is subjects.DLQ:  # every stage's letters of B, of A, of no workspace
            lasts = [subjects.DLQ.stage(stage).for_workspace(ws) for stage in STAGES.names()
                     for ws in (b, a, subjects.DLQ_NO_WORKSPACE)]
        else:
            lasts = [pattern.token(b)]
        for last in lasts:
            yield Attack(name, "publish", last)
            yield Attack(name, "subscribe", last)
        yield Attack(name, "subscribe", pattern.wildcard)
        if pattern is not subjects.DLQ:
            if pattern not in MAY_PUBLISH:
                yield Attack(name, "publish", pattern.for_workspace(a))
            if pattern not in MAY_READ:
                yield Attack(name, "subscribe", pattern.for_workspace(a))


def _durables(stream: str) -> list[str]:
    return [c.durable for c in consumers.DECLARED if c.stream == stream] or ["spy"]


def _stream_api(family: str, stream: str) -> Iterator[Attack]:
    api = "$JS.API"
    for op in STREAM_OPS:
        yield Attack(family, "publish", f"{api}.STREAM.{op}.{stream}")
    for durable in _durables(stream):
        for op in CONSUMER_OPS:
            yield Attack(family, "publish", f"{api}.CONSUMER.{op}.{stream}.{durable}")
        yield Attack(family, "publish", f"$JS.ACK.{stream}.{durable}.1.1.1.1.0")
    for op in ("CREATE", "DURABLE.CREATE"):
        yield Attack(family, "publish", f"{api}.CONSUMER.{op}.{stream}.spy")
    for op in ("CREATE", "LIST", "NAMES"):
        yield Attack(family, "publish", f"{api}.CONSUMER.{op}.{stream}")
    yield Attack(family, "publish", f"{api}.CONSUMER.CREATE.{stream}.spy.>")
    yield Attack(family, "publish", f"{api}.DIRECT.GET.{stream}")
    yield Attack(family, "publish", f"{api}.DIRECT.GET.{stream}.mumu.x")
    yield Attack(family, "publish", f"$JS.FC.{stream}.x")


def _kv(family: str, bucket: str, a: str, b: str) -> Iterator[Attack]:
    yield from _stream_api(family, f"KV_{bucket}")
    for ws in (a, b):  # even A's own keys: the buckets are the services'
        yield Attack(family, "publish", f"$KV.{bucket}.{ws}.x")
        yield Attack(family, "subscribe", f"$KV.{bucket}.{ws}.>")
    yield Attack(family, "subscribe", f"$KV.{bucket}.>")


def _objects(family: str, bucket: str) -> Iterator[Attack]:
    yield from _stream_api(family, f"OBJ_{bucket}")
    yield Attack(family, "publish", f"$O.{bucket}.C.x")
    yield Attack(family, "publish", f"$O.{bucket}.M.x")
    yield Attack(family, "subscribe", f"$O.{bucket}.>")


def table(a: str, b: str, kv_buckets: set[str]) -> list[Attack]:
    """Every attack of A's producer on B and on the services. ``kv_buckets``: which of
    the ``BUCKET_*`` are KV buckets (the rest are Object Stores), as the server has them."""
    rows = list(_pattern_attacks(a, b))
    for name, value in vars(subjects).items():
        if name.startswith("STREAM_") and isinstance(value, str):
            rows += _stream_api(name, value)
        if name.startswith("BUCKET_") and isinstance(value, str):
            rows += (_kv(name, value, a, b) if value in kv_buckets else _objects(name, value))
    rows += _stream_api("intake_stream", subjects.intake_stream(b))
    rows += _objects("upload_bucket", subjects.upload_bucket(b))
    rows += _objects("audio_bucket", subjects.audio_bucket(b))
    rows += _objects("audio_bucket (A's: services only)", subjects.audio_bucket(a))
    rows += _kv("once_bucket", subjects.once_bucket(b), a, b)
    rows += _kv("once_bucket (A's: services only)", subjects.once_bucket(a), a, b)
    for durable in (c.durable for c in consumers.DECLARED):
        for ws in (a, b):
            rows.append(Attack("replay_pattern", "publish",
                               subjects.replay_pattern(durable).for_workspace(ws)))
        rows.append(Attack("replay_pattern", "subscribe",
                           subjects.replay_pattern(durable).wildcard))
    rows += [Attack("live_chunk", "publish", subjects.live_chunk("s1", b)),
             Attack("live_chunk", "subscribe", subjects.live_chunk("s1", b)),
             Attack("LIVE_CHUNK_WILDCARD", "subscribe", subjects.LIVE_CHUNK_WILDCARD),
             Attack("producer_inbox_prefix", "subscribe",
                    f"{subjects.producer_inbox_prefix(b)}.>"),
             Attack("producer_inbox_prefix", "publish",  # a forged PubAck for B
                    f"{subjects.producer_inbox_prefix(b)}.x")]
    for role in Role:
        prefix = subjects.service_inbox_prefix(role)
        rows += [Attack("service_inbox_prefix", "subscribe", f"{prefix}.>"),
                 Attack("service_inbox_prefix", "publish", f"{prefix}.x")]  # a forged reply
    rows += [Attack("JetStream account API", "publish", s) for s in ACCOUNT_API]
    rows += [Attack("wide reads", "subscribe", s) for s in WIDE_READS]
    return list(dict.fromkeys(rows))

"""Who may do what on the broker: the subject permissions of every NATS user of mumu.

Each service role, the operator and each workspace producer gets an allow-list (NATS
denies everything else). The lists are built from the contracts (subjects, streams,
buckets, durable consumers), never typed by hand, so a renamed subject moves its
permission with it. ``docs/security.md`` explains the choices.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from mumu.broker.streams import load_stream_configs
from mumu.contracts import consumers, subjects
from mumu.contracts.event_types import RESULT_TYPES

JS_API: Final = "$JS.API"


class Role(StrEnum):
    """A NATS user of mumu that is not a workspace producer."""

    INGEST = "ingest"
    TRANSCRIBE = "transcribe"
    REASON = "reason"
    PERSIST = "persist"
    GATEWAY = "gateway"
    EXPORTER = "exporter"
    """``mumu exporter``: reads stream and consumer state for Prometheus, nothing else."""
    OPERATOR = "operator"
    """The SRE and the CLI: every subject of the application account."""
    SYSTEM = "system"
    """The NATS system account user: reloads the servers' authorization."""


SERVICES: Final = (
    Role.INGEST, Role.TRANSCRIBE, Role.REASON, Role.PERSIST, Role.GATEWAY, Role.EXPORTER,
)


@dataclass(frozen=True, slots=True)
class Permissions:
    """Subjects a user may publish to and subscribe to (NATS wildcards allowed)."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]

    def as_config(self) -> dict[str, dict[str, list[str]]]:
        """The ``permissions`` block of a nats-server user."""
        return {
            "publish": {"allow": list(dict.fromkeys(self.publish))},
            "subscribe": {"allow": list(dict.fromkeys(self.subscribe))},
        }


def stream_info(stream: str) -> list[str]:
    return [f"{JS_API}.STREAM.INFO.{stream}"]


def consume(consumer: consumers.StageConsumer) -> list[str]:
    """Create (or bind to) a durable pull consumer, fetch from it and ack its messages."""
    stream, durable = consumer.stream, consumer.durable
    return [
        *stream_info(stream),
        f"{JS_API}.CONSUMER.INFO.{stream}.{durable}",
        f"{JS_API}.CONSUMER.CREATE.{stream}.{durable}",
        f"{JS_API}.CONSUMER.CREATE.{stream}.{durable}.>",
        f"{JS_API}.CONSUMER.DURABLE.CREATE.{stream}.{durable}",
        f"{JS_API}.CONSUMER.MSG.NEXT.{stream}.{durable}",
        f"$JS.ACK.{stream}.{durable}.>",
    ]


def consumer_info(consumer: consumers.StageConsumer) -> list[str]:
    """Read a durable's state (lag, pending) without consuming from it."""
    return [f"{JS_API}.CONSUMER.INFO.{consumer.stream}.{consumer.durable}"]


def direct_reads(stream: str) -> list[str]:
    """Read single messages of ``stream`` (KV and Object Store lookups)."""
    return [
        *stream_info(stream),
        f"{JS_API}.DIRECT.GET.{stream}",
        f"{JS_API}.DIRECT.GET.{stream}.>",
        f"{JS_API}.STREAM.MSG.GET.{stream}",
    ]


def object_upload(bucket: str) -> list[str]:
    """Put and delete objects of one bucket (nats-py's object store API), no get: a
    producer's grant. ``get`` would need ``STREAM.NAMES``, whose answer names every
    workspace's streams."""
    stream = f"OBJ_{bucket}"
    return [
        *direct_reads(stream),  # put() reads the metadata of an earlier object of its name
        f"$O.{bucket}.>",  # chunks and metadata (put and delete)
        f"{JS_API}.STREAM.PURGE.{stream}",  # drops an object's chunks
    ]


def object_store(bucket: str) -> list[str]:
    """Put, get and delete objects of one bucket (nats-py's object store API)."""
    stream = f"OBJ_{bucket}"
    return [
        *object_upload(bucket),
        f"{JS_API}.STREAM.NAMES",  # get() finds the stream of the chunk subject
        f"{JS_API}.CONSUMER.CREATE.{stream}",  # get(): an ordered consumer on the chunks
        f"{JS_API}.CONSUMER.CREATE.{stream}.>",
        f"{JS_API}.CONSUMER.DELETE.{stream}.>",
        f"$JS.FC.{stream}.>",  # the ordered consumer's flow control replies
    ]


def live_chunks() -> list[str]:
    """Read one live stream's chunks through an ordered consumer on MUMU_INGEST."""
    stream = subjects.STREAM_INGEST
    return [
        f"{JS_API}.CONSUMER.CREATE.{stream}",
        f"{JS_API}.CONSUMER.CREATE.{stream}.>",
        f"{JS_API}.CONSUMER.DELETE.{stream}.>",
        f"$JS.FC.{stream}.>",
    ]


def key_value(bucket: str) -> list[str]:
    """Get, create and update keys of one KV bucket."""
    return [*direct_reads(f"KV_{bucket}"), f"$KV.{bucket}.>"]


def once_records(workspaces: Iterable[str]) -> list[str]:
    """The runtime's records of finals published at most once (``runtime/once.py``): each
    workspace's ``mumu-once-<ws>`` KV, and finding an earlier copy of a final in
    MUMU_RESULTS."""
    return [
        *(grant for ws in workspaces for grant in key_value(subjects.once_bucket(ws))),
        *direct_reads(subjects.STREAM_RESULTS),
        f"{JS_API}.STREAM.NAMES",
    ]


def produce(workspace: str) -> Permissions:
    """A workspace producer: its own intake subjects and uploads, its own results."""
    return Permissions(
        publish=(
            subjects.INGEST_AUDIO.for_workspace(workspace),
            subjects.INGEST_TEXT.for_workspace(workspace),
            subjects.INGEST_LIVE.for_workspace(workspace),
            f"{subjects.LIVE_CHUNK_PREFIX}.*.{workspace}",
            *object_upload(subjects.upload_bucket(workspace)),
        ),
        subscribe=(
            f"{subjects.producer_inbox_prefix(workspace)}.>",
            *(t.pattern.for_workspace(workspace) for t in RESULT_TYPES),
        ),
    )


def _service(role: Role, publish: Iterable[str]) -> Permissions:
    return Permissions(
        publish=tuple(publish),
        subscribe=(f"{subjects.service_inbox_prefix(role)}.>",),
    )


def _dead_letters(stage: str) -> list[str]:
    return [subjects.DLQ.stage(stage).wildcard, subjects.ERROR.wildcard]


def service(
    role: Role, workspaces: Iterable[str] = (),
    stage_consumers: Iterable[consumers.StageConsumer] = (),
) -> Permissions:
    """The permissions of one service role. ``workspaces``: every provisioned workspace
    (ingest and the gateway read and write their upload buckets; ingest and
    transcribe their normalised-audio buckets; transcribe and reason their once records);
    ``stage_consumers``:
    every stage's durable (the gateway reads their lag; ``stages.registry`` lists them)."""
    workspaces = list(workspaces)
    uploads = [grant for ws in workspaces for grant in object_store(subjects.upload_bucket(ws))]
    # each workspace's normalised audio; the shared mumu-audio for audio stored before them
    audio = [grant for ws in workspaces for grant in object_store(subjects.audio_bucket(ws))]
    if role is Role.INGEST:
        return _service(role, [
            *consume(consumers.INGEST_AUDIO),
            *consume(consumers.INGEST_QUOTA_ENDS),  # frees in-flight quota slots
            *key_value(subjects.BUCKET_QUOTA),
            subjects.AUDIO_READY.wildcard,
            *_dead_letters("ingest"),
            *object_store(subjects.BUCKET_AUDIO),
            *audio,
            *uploads,
        ])
    if role is Role.TRANSCRIBE:
        return _service(role, [
            *consume(consumers.TRANSCRIBE_AUDIO),
            *consume(consumers.TRANSCRIBE_LIVE),
            *live_chunks(),
            subjects.TRANSCRIPT_PARTIAL.wildcard,
            subjects.TRANSCRIPT_FINAL.wildcard,
            subjects.STREAM_ENDED.wildcard,  # a live stream is over
            subjects.CONTROL_CANCEL.wildcard,  # barge-in: a live utterance cancels an answer
            *_dead_letters("transcribe"),
            *key_value(subjects.BUCKET_QUOTA),  # the workspaces' result budgets
            *object_store(subjects.BUCKET_AUDIO),
            *audio,
            *once_records(workspaces),
        ])
    if role is Role.REASON:
        perms = _service(role, [
            *consume(consumers.REASON_TRANSCRIPTS),
            *consume(consumers.REASON_TEXT),
            subjects.ANSWER_DELTA.wildcard,
            subjects.ANSWER_FINAL.wildcard,
            *_dead_letters("reason"),
            *key_value(subjects.BUCKET_SESSIONS),
            *key_value(subjects.BUCKET_QUOTA),  # admits raw NATS text asks
            *once_records(workspaces),
        ])
        # cancels arrive as plain NATS messages
        return Permissions(perms.publish, (*perms.subscribe, subjects.CONTROL_CANCEL.wildcard))
    if role is Role.PERSIST:
        perms = _service(role, [
            *consume(consumers.PERSIST_RESULTS),
            subjects.PERSISTED.wildcard,
            *_dead_letters("persist"),
            # a shredded workspace's final that arrives after the shred's purge: erased,
            # with its session's turns in the sessions KV (a purge by subject)
            f"{JS_API}.STREAM.MSG.DELETE.{consumers.PERSIST_RESULTS.stream}",
            f"{JS_API}.STREAM.PURGE.KV_{subjects.BUCKET_SESSIONS}",
        ])
        # shred notices arrive as plain NATS messages (every replica drops its keys)
        return Permissions(perms.publish, (*perms.subscribe, subjects.CONTROL_SHRED.wildcard))
    if role is Role.GATEWAY:
        return _gateway(tuple(stage_consumers), uploads)
    if role is Role.EXPORTER:
        return _service(role, EXPORTER_READS)
    raise ValueError(f"{role} is not a service role")


def _gateway(
    stage_consumers: tuple[consumers.StageConsumer, ...], uploads: list[str],
) -> Permissions:
    """Publishes asks and cancels for any workspace, reads results through its own
    ephemeral consumers, checks every stage's durable for readiness and lag."""
    results = subjects.STREAM_RESULTS
    declared = [config["name"] for config in load_stream_configs()]
    publish = [
        # readiness checks every declared stream; the lag monitor lists their consumers
        *(info for stream in declared for info in stream_info(stream)),
        *(f"{JS_API}.CONSUMER.LIST.{stream}" for stream in declared),
        subjects.INGEST_AUDIO.wildcard,
        subjects.INGEST_TEXT.wildcard,
        subjects.INGEST_LIVE.wildcard,  # live streams of websocket and Realtime clients
        subjects.LIVE_CHUNK_WILDCARD,
        subjects.CONTROL_CANCEL.wildcard,
        *(info for c in stage_consumers for info in consumer_info(c)),
        f"{JS_API}.CONSUMER.CREATE.{results}",
        f"{JS_API}.CONSUMER.CREATE.{results}.>",
        f"{JS_API}.CONSUMER.DELETE.{results}.>",
        f"{JS_API}.CONSUMER.MSG.NEXT.{results}.>",  # replays: bounded pull batches
        f"$JS.FC.{results}.>",
        *object_store(subjects.BUCKET_AUDIO),
        *uploads,
        *key_value(subjects.BUCKET_QUOTA),  # admits asks against the workspace quotas
    ]
    inbox = f"{subjects.service_inbox_prefix(Role.GATEWAY)}.>"
    return Permissions(tuple(publish), (inbox, subjects.AUDIO_READY.wildcard))


EXPORTER_READS: Final = (
    f"{JS_API}.INFO",
    f"{JS_API}.STREAM.LIST",
    f"{JS_API}.STREAM.NAMES",
    f"{JS_API}.STREAM.INFO.*",
    f"{JS_API}.CONSUMER.LIST.*",
    f"{JS_API}.CONSUMER.INFO.*.*",
    # the time of a consumer's oldest unacked message (the body comes along and is dropped:
    # JetStream has no header-only get)
    f"{JS_API}.STREAM.MSG.GET.*",
)
"""The exporter's JetStream reads: stream and consumer state (``mumu.ops.status``); it
creates, deletes, acks and publishes nothing."""

OPERATOR_PERMISSIONS: Final = Permissions(publish=(">",), subscribe=(">",))

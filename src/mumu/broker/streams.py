"""``streams/*.json`` (JetStream StreamConfig JSON) applied idempotently, with drift reports.

The files are sent to the JetStream API as they are (``$JS.API.STREAM.CREATE``/``UPDATE``),
so they stay usable with the nats CLI (``nats stream add --config streams/x.json``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, ObjectStoreConfig, StorageType
from nats.js.object_store import ObjectStore

from mumu.broker.dlq_upgrade import move_legacy_letters, refuse_truncation
from mumu.broker.intake import ingest_shape, intake_streams, wanted_sources
from mumu.broker.jsapi import api as _api
from mumu.broker.jsapi import stream_config
from mumu.contracts import subjects
from mumu.resources import resource_dir

# keys the server fills in or that cannot change after creation; never reported as drift
_IGNORED = {"description"}
_IMMUTABLE = {"storage", "name", "retention"}


@dataclass
class StreamChange:
    name: str
    action: Literal["created", "updated", "recreated", "unchanged", "drift", "missing"]
    diff: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    def describe(self) -> str:
        if not self.diff:
            return f"{self.name}: {self.action}"
        parts = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in sorted(self.diff.items()))
        return f"{self.name}: {self.action} ({parts})"


def load_stream_configs(directory: Path | None = None) -> list[dict[str, Any]]:
    directory = directory or resource_dir("streams")
    configs = []
    for path in sorted(directory.glob("*.json")):
        if path.name == "buckets.json":
            continue
        configs.append(json.loads(path.read_text()))
    return configs


def load_bucket_configs(directory: Path | None = None) -> dict[str, list[dict[str, Any]]]:
    directory = directory or resource_dir("streams")
    data: dict[str, list[dict[str, Any]]] = json.loads((directory / "buckets.json").read_text())
    return data


def diff_config(desired: dict[str, Any], actual: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Keys of ``desired`` whose live value differs: ``{key: (live, desired)}``."""
    return {
        key: (actual.get(key), want)
        for key, want in desired.items()
        if key not in _IGNORED and actual.get(key) != want
        # the server omits empty lists and zero durations from a config
        and not (want in ([], {}, 0) and actual.get(key) in (None, [], {}, 0))
    }


async def apply_stream(nc: NATS, desired: dict[str, Any], *, dry_run: bool = False) -> StreamChange:
    name = desired["name"]
    actual = await stream_config(nc, name)
    if actual is None:
        if dry_run:
            return StreamChange(name, "missing")
        await _api(nc, f"STREAM.CREATE.{name}", desired)
        return StreamChange(name, "created")
    diff = diff_config(desired, actual)
    if not diff:
        return StreamChange(name, "unchanged")
    if dry_run:
        return StreamChange(name, "drift", diff)
    immutable = set(diff) & _IMMUTABLE
    if immutable == {"storage"} and actual.get("storage") == "memory":
        # a memory stream is lost on every server restart anyway: recreating it on file
        # storage loses only what a restart would (MUMU_CONTROL before it was on file)
        await _api(nc, f"STREAM.DELETE.{name}", {})
        await _api(nc, f"STREAM.CREATE.{name}", desired)
        return StreamChange(name, "recreated", diff)
    if immutable:
        raise RuntimeError(
            f"stream {name}: {', '.join(sorted(immutable))} cannot change on a live stream; "
            "back it up and recreate it"
        )
    await refuse_truncation(nc, actual, desired)
    await _api(nc, f"STREAM.UPDATE.{name}", {**actual, **desired})
    return StreamChange(name, "updated", diff)


def _bucket_stream_config(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    """The limits and replicas of a bucket, as keys of its underlying stream config.

    ``num_replicas`` is compared like a stream's: ``--replicas 3`` on a live R1 deployment
    moves the buckets to R3 as well. Left at R1, a KV bucket (``mumu-quota``, ``mumu-once-<ws>``,
    ``mumu-sessions``) lives on one node, and every ask waits for that node while it is
    down (``docs/ops.md``, "The cluster")."""
    ns = 1_000_000_000
    wanted: dict[str, Any] = {
        "max_age": int(spec.get("ttl_seconds", 0) * ns),
        "max_bytes": spec.get("max_bytes", -1),
        "num_replicas": spec.get("replicas", 1),
    }
    if kind == "kv":
        wanted["max_msg_size"] = spec.get("max_value_size", -1)
        wanted["max_msgs_per_subject"] = spec.get("history", 1)
    return wanted


async def apply_buckets(
    nc: NATS, buckets: dict[str, list[dict[str, Any]]], *, dry_run: bool = False
) -> list[StreamChange]:
    js = nc.jetstream()
    changes: list[StreamChange] = []
    specs = [("obj", s) for s in buckets.get("object_stores", [])] + [
        ("kv", s) for s in buckets.get("key_value", [])
    ]
    for kind, spec in specs:
        stream = f"{'OBJ' if kind == 'obj' else 'KV'}_{spec['bucket']}"
        actual = await stream_config(nc, stream)
        if actual is None:
            if dry_run:
                changes.append(StreamChange(stream, "missing"))
                continue
            storage = StorageType(spec.get("storage", "file"))
            if kind == "obj":
                await js.create_object_store(
                    spec["bucket"],
                    config=ObjectStoreConfig(
                        bucket=spec["bucket"],
                        description=spec.get("description"),
                        ttl=spec.get("ttl_seconds"),
                        max_bytes=spec.get("max_bytes", -1),
                        storage=storage,
                        replicas=spec.get("replicas", 1),
                    ),
                )
            else:
                await js.create_key_value(
                    config=KeyValueConfig(
                        bucket=spec["bucket"],
                        description=spec.get("description"),
                        ttl=spec.get("ttl_seconds"),
                        history=spec.get("history", 1),
                        max_value_size=spec.get("max_value_size", -1),
                        max_bytes=spec.get("max_bytes", -1),
                        storage=storage,
                        replicas=spec.get("replicas", 1),
                    )
                )
            changes.append(StreamChange(stream, "created"))
            continue
        diff = diff_config(_bucket_stream_config(kind, spec), actual)
        if not diff:
            changes.append(StreamChange(stream, "unchanged"))
        elif dry_run:
            changes.append(StreamChange(stream, "drift", diff))
        else:
            await _api(
                nc, f"STREAM.UPDATE.{stream}", {**actual, **{k: v[1] for k, v in diff.items()}}
            )
            changes.append(StreamChange(stream, "updated", diff))
    return changes


async def apply_all(
    nc: NATS, directory: Path | None = None, *, dry_run: bool = False,
    replicas: int | None = None,
) -> list[StreamChange]:
    """Create missing streams and buckets, update changed ones; ``dry_run`` only reports.

    ``replicas`` overrides the files' replica count (3 on a NATS cluster).
    """
    configs = load_stream_configs(directory)
    buckets = load_bucket_configs(directory)
    if replicas is not None:
        configs = [{**c, "num_replicas": replicas} for c in configs]
        buckets = {kind: [{**b, "replicas": replicas} for b in specs]
                   for kind, specs in buckets.items()}
    if not dry_run:  # letters stored on mumu.dlq.<stage> move to mumu.dlq.<stage>.<ws>
        for cfg in configs:
            if cfg["name"] == subjects.STREAM_DLQ:
                await move_legacy_letters(nc, cfg)
    changes = [await apply_stream(nc, await _with_live_sources(nc, cfg), dry_run=dry_run)
               for cfg in configs]
    changes += await apply_buckets(nc, buckets, dry_run=dry_run)
    return changes


async def _with_live_sources(nc: NATS, config: dict[str, Any]) -> dict[str, Any]:
    """``MUMU_INGEST`` sources the intake streams that exist now (a re-apply keeps them)."""
    if config["name"] != subjects.STREAM_INGEST:
        return config
    live = await stream_config(nc, config["name"])
    sources = wanted_sources(live.get("sources") if live else None, await intake_streams(nc))
    return {**config, **ingest_shape(sources)}


@dataclass
class StreamStatus:
    name: str
    messages: int
    bytes: int
    consumers: int
    pending: int
    redelivered: int
    ack_pending: int


async def status(nc: NATS) -> list[StreamStatus]:
    """Messages, bytes, consumers, pending and redelivered per mumu stream."""
    names = (await _api(nc, "STREAM.NAMES", {})).get("streams") or []
    rows = []
    for name in sorted(names):
        info = await _api(nc, f"STREAM.INFO.{name}")
        state = info["state"]
        consumers = (await _api(nc, f"CONSUMER.LIST.{name}", {})).get("consumers") or []
        rows.append(
            StreamStatus(
                name=name,
                messages=state.get("messages", 0),
                bytes=state.get("bytes", 0),
                consumers=state.get("consumer_count", 0),
                pending=sum(c.get("num_pending", 0) for c in consumers),
                redelivered=sum(c.get("num_redelivered", 0) for c in consumers),
                ack_pending=sum(c.get("num_ack_pending", 0) for c in consumers),
            )
        )
    return rows


async def open_object_store(js: JetStreamContext, bucket: str) -> ObjectStore:
    """The Object Store ``bucket``; a clear error when ``mumu streams apply`` never ran."""
    try:
        return await js.object_store(bucket)
    except nats.js.errors.BucketNotFoundError as exc:
        raise RuntimeError(
            f"Object Store bucket {bucket} does not exist: run `mumu streams apply`"
        ) from exc

"""A workspace on the broker: its intake stream, its upload and audio buckets, its KV of
once records, its source in MUMU_INGEST.

``ensure_workspace`` is idempotent and safe when several processes run it at once (the
gateway, ``mumu workspace create``, ``mumu streams apply``, ``mumu up``): identical creates
succeed on the server, and ``intake.converge_sources`` re-checks after every write.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from nats.aio.client import Client as NATS

from mumu.broker.bounds import check_intake_share
from mumu.broker.intake import converge_sources, intake_config
from mumu.broker.jsapi import ERR_STREAM_NAME_IN_USE, JetStreamApiError, api, stream_config
from mumu.broker.settings import NatsSettings
from mumu.broker.streams import StreamChange, apply_buckets, apply_stream
from mumu.contracts import subjects

log = logging.getLogger(__name__)

INTAKE_MAX_BYTES = 64 * 1024 * 1024
UPLOAD_MAX_BYTES = 256 * 1024 * 1024
AUDIO_MAX_BYTES = 128 * 1024 * 1024
ONCE_MAX_BYTES = 32 * 1024 * 1024
"""Defaults of ``MUMU_NATS__{INTAKE,UPLOAD,AUDIO,ONCE}_MAX_BYTES``. Each is reserved against
the server's JetStream store for every workspace (docs/security.md, docs/reliability.md)."""
UPLOAD_TTL_SECONDS = 86400
ONCE_TTL_SECONDS = 86400
"""As long as MUMU_INGEST keeps an input that may be redelivered."""
ONCE_MAX_VALUE = 256
"""``claimed:<ns>`` or ``stored:<stream>:<seq>``."""


def upload_bucket_spec(
    workspace: str, max_bytes: int = UPLOAD_MAX_BYTES, replicas: int = 1
) -> dict[str, object]:
    """The upload bucket of ``workspace``, as an entry of ``streams/buckets.json``."""
    return {
        "bucket": subjects.upload_bucket(workspace),
        "description": f"Large audio uploaded by producers of workspace {workspace}",
        "ttl_seconds": UPLOAD_TTL_SECONDS,
        "storage": "file",
        "max_bytes": max_bytes,
        "replicas": replicas,
    }


def audio_bucket_spec(
    workspace: str, max_bytes: int = AUDIO_MAX_BYTES, replicas: int = 1
) -> dict[str, object]:
    """The normalised-audio bucket of ``workspace``: services only, emptied by transcribe
    (what a failed request leaves expires with the TTL)."""
    return {
        "bucket": subjects.audio_bucket(workspace),
        "description": f"Normalised audio of workspace {workspace}, until it is transcribed",
        "ttl_seconds": UPLOAD_TTL_SECONDS,
        "storage": "file",
        "max_bytes": max_bytes,
        "replicas": replicas,
    }


def once_bucket_spec(
    workspace: str, max_bytes: int = ONCE_MAX_BYTES, replicas: int = 1
) -> dict[str, object]:
    """The KV of ``workspace``'s once records (``runtime/once.py``): services only, ids
    only, one record per final for 24 h. A bucket per workspace, so one whose finals fill
    it costs no other workspace its records."""
    return {
        "bucket": subjects.once_bucket(workspace),
        "description": f"Once records of workspace {workspace}: which finals were published",
        "ttl_seconds": ONCE_TTL_SECONDS,
        "history": 1,
        "storage": "file",
        "max_value_size": ONCE_MAX_VALUE,
        "max_bytes": max_bytes,
        "replicas": replicas,
    }


async def _apply_intake(nc: NATS, config: dict[str, object]) -> StreamChange:
    try:
        return await apply_stream(nc, config)
    except JetStreamApiError as exc:
        if exc.err_code != ERR_STREAM_NAME_IN_USE:
            raise
        # another process created it a moment ago with other limits: update it instead
        return await apply_stream(nc, config)


async def ensure_workspace(
    nc: NATS, workspace: str, *, intake_max_bytes: int = INTAKE_MAX_BYTES,
    upload_max_bytes: int = UPLOAD_MAX_BYTES, replicas: int | None = None,
    audio_max_bytes: int = AUDIO_MAX_BYTES, once_max_bytes: int = ONCE_MAX_BYTES,
) -> list[StreamChange]:
    """Create or update the workspace's intake stream, upload and audio buckets and once
    records, and make ``MUMU_INGEST`` source the intake stream. Needs ``mumu streams
    apply`` first."""
    if await stream_config(nc, subjects.STREAM_INGEST) is None:
        raise RuntimeError(
            f"stream {subjects.STREAM_INGEST} does not exist: run `mumu streams apply`"
        )
    # one workspace reaches MUMU_INGEST only through its intake stream: that bounds its share
    await check_intake_share(nc, intake_max_bytes)
    # a MUMU_INGEST from before intake streams still captures mumu.ingest.*.*: release it
    await converge_sources(nc)
    config = intake_config(workspace, max_bytes=intake_max_bytes, replicas=replicas)
    changes = [await _apply_intake(nc, config)]
    specs = [upload_bucket_spec(workspace, upload_max_bytes, replicas or 1),
             audio_bucket_spec(workspace, audio_max_bytes, replicas or 1)]
    once = [once_bucket_spec(workspace, once_max_bytes, replicas or 1)]
    changes += await apply_buckets(nc, {"object_stores": specs, "key_value": once})
    await converge_sources(nc)
    for change in changes:
        if change.action != "unchanged":
            log.info("workspace %s: %s", workspace, change.describe())
    return changes


async def ensure_workspaces(
    nc: NATS, workspaces: Iterable[str], *, intake_max_bytes: int = INTAKE_MAX_BYTES,
    upload_max_bytes: int = UPLOAD_MAX_BYTES, replicas: int | None = None,
    audio_max_bytes: int = AUDIO_MAX_BYTES, once_max_bytes: int = ONCE_MAX_BYTES,
) -> list[StreamChange]:
    """``ensure_workspace`` for each of ``workspaces``."""
    changes: list[StreamChange] = []
    for workspace in workspaces:
        changes += await ensure_workspace(
            nc, workspace, intake_max_bytes=intake_max_bytes,
            upload_max_bytes=upload_max_bytes, replicas=replicas,
            audio_max_bytes=audio_max_bytes, once_max_bytes=once_max_bytes,
        )
    return changes


async def ensure_configured(
    nc: NATS, settings: NatsSettings, workspaces: Iterable[str], *,
    replicas: int | None = None,
) -> list[StreamChange]:
    """``ensure_workspaces`` with the limits of ``settings`` (``MUMU_NATS__*_MAX_BYTES``);
    ``replicas`` when given, else the settings' ``stream_replicas``."""
    return await ensure_workspaces(
        nc, workspaces, intake_max_bytes=settings.intake_max_bytes,
        upload_max_bytes=settings.upload_max_bytes, audio_max_bytes=settings.audio_max_bytes,
        once_max_bytes=settings.once_max_bytes, replicas=replicas or settings.stream_replicas,
    )


async def remove_workspace(nc: NATS, workspace: str) -> None:
    """Delete the workspace's intake stream (and its unsourced requests), upload and audio
    buckets and once records, and drop it from ``MUMU_INGEST``'s sources. Missing parts
    are fine."""
    for stream in own_streams(workspace):
        try:
            await api(nc, f"STREAM.DELETE.{stream}")
        except JetStreamApiError as exc:
            if exc.code != 404:
                raise
    if await stream_config(nc, subjects.STREAM_INGEST) is not None:
        await converge_sources(nc)
    log.info("workspace %s: intake stream, upload and audio buckets, once records removed",
             workspace)


def own_streams(workspace: str) -> tuple[str, ...]:
    """The streams (buckets' too) that hold one workspace's messages only."""
    return (subjects.intake_stream(workspace), f"OBJ_{subjects.upload_bucket(workspace)}",
            f"OBJ_{subjects.audio_bucket(workspace)}", f"KV_{subjects.once_bucket(workspace)}")

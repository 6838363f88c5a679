"""The NATS half of ``mumu keys shred <ws>``: announce the shred, then purge the workspace.

After the database has destroyed the workspace's data keys (``mumu.db.keyadmin.shred``):

1. ``mumu.control.shred.<ws>`` tells every persist replica to drop its cached keys;
2. every stream loses the workspace's messages: a purge with the subject filters
   ``mumu.*.<ws>`` and ``mumu.*.*.<ws>`` (every subject of the contracts ends with the
   workspace), the whole intake stream ``MUMU_INTAKE_<ws>``, upload bucket
   ``mumu-upload-<ws>``, audio bucket ``mumu-audio-<ws>`` and the runtime's once records
   ``mumu-once-<ws>`` (ids only), the keys ``<ws>.*`` of the sessions KV, the objects of
   the shared ``mumu-audio`` under a ``<ws>`` path segment, and the workspace's dead
   letters (``mumu.dlq.*.<ws>``, counted apart).

Idempotent: a second run finds nothing more (or what arrived since) and purges it.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

import nats.js.errors
from nats.aio.client import Client as NATS

from mumu.broker.jsapi import JetStreamApiError, api, stream_names
from mumu.broker.workspaces import own_streams
from mumu.contracts import subjects
from mumu.contracts.events import WorkspaceShredded

KV_SESSIONS_STREAM = f"KV_{subjects.BUCKET_SESSIONS}"
"""The one shared KV whose keys begin with the workspace."""
AUDIO_OBJECTS_STREAM = f"OBJ_{subjects.BUCKET_AUDIO}"


@dataclass
class PurgeReport:
    workspace_id: str
    messages: dict[str, int] = field(default_factory=dict)
    """Stream name -> messages of the workspace purged from it (stream, KV and bucket
    streams alike; only non-zero entries)."""
    audio_objects: int = 0
    """Objects of the workspace deleted from ``mumu-audio``."""
    dead_letters: int = 0
    """Dead letters of the workspace deleted from ``MUMU_DLQ``."""

    @property
    def total(self) -> int:
        return sum(self.messages.values()) + self.audio_objects + self.dead_letters


def stream_filters(workspace: str) -> tuple[str, ...]:
    """Subject filters matching every message of ``workspace`` in a shared stream (every
    subject pattern of the contracts is ``mumu.<one or two tokens>.<ws>``)."""
    subjects.intake_stream(workspace)  # ValueError unless one safe token
    return (f"mumu.*.{workspace}", f"mumu.*.*.{workspace}")


async def announce(nc: NATS, workspace: str) -> None:
    """``mumu.control.shred.<ws>``, stored by MUMU_CONTROL (acknowledged by JetStream)."""
    notice = WorkspaceShredded(workspace_id=workspace)
    await nc.jetstream().publish(
        subjects.CONTROL_SHRED.for_workspace(workspace), notice.model_dump_json().encode(),
    )


async def _purge(nc: NATS, stream: str, subject: str | None) -> int:
    body = {"filter": subject} if subject is not None else {}
    try:
        reply = await api(nc, f"STREAM.PURGE.{stream}", body)
    except JetStreamApiError as exc:
        if exc.code == 404:  # the stream went away meanwhile
            return 0
        raise
    return int(reply.get("purged", 0))


async def purge_workspace(nc: NATS, workspace: str) -> PurgeReport:
    """Remove every message, object, KV entry and dead letter of ``workspace`` from NATS."""
    report = PurgeReport(workspace)
    own = set(own_streams(workspace))
    for stream in await stream_names(nc):
        if stream == subjects.STREAM_DLQ:
            continue  # its dead letters: counted on their own, below
        if stream in own:
            filters: tuple[str | None, ...] = (None,)
        elif stream == KV_SESSIONS_STREAM:
            filters = (f"$KV.{subjects.BUCKET_SESSIONS}.{workspace}.>",)
        elif stream.startswith(("KV_", "OBJ_")):
            continue  # other buckets' subjects never name a workspace
        else:
            filters = stream_filters(workspace)
        purged = sum([await _purge(nc, stream, f) for f in filters])
        if purged:
            report.messages[stream] = purged
    report.audio_objects = await _delete_audio(nc, workspace)
    report.dead_letters = await _delete_letters(nc, workspace)
    return report


async def _delete_audio(nc: NATS, workspace: str) -> int:
    """Purge the chunks and the metadata (name included) of every ``mumu-audio`` object of
    ``workspace``, deleted ones' markers too; returns how many live objects went."""
    js = nc.jetstream()
    bucket = subjects.BUCKET_AUDIO
    try:
        store = await js.object_store(bucket)
        infos = await store.list(ignore_deletes=False)
    except (nats.js.errors.BucketNotFoundError, nats.js.errors.NotFoundError):
        return 0
    deleted = 0
    for info in infos:
        if workspace not in info.name.split("/"):
            continue
        if info.nuid:
            await _purge(nc, AUDIO_OBJECTS_STREAM, f"$O.{bucket}.C.{info.nuid}")
        meta = base64.urlsafe_b64encode(info.name.encode()).decode()
        await _purge(nc, AUDIO_OBJECTS_STREAM, f"$O.{bucket}.M.{meta}")
        deleted += 0 if info.deleted else 1
    return deleted


async def _delete_letters(nc: NATS, workspace: str) -> int:
    """Purge the workspace's dead letters (``mumu.dlq.<stage>.<ws>``, every stage)."""
    return await _purge(nc, subjects.STREAM_DLQ, subjects.DLQ.for_workspace(workspace))

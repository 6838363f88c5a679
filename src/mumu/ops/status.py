"""What ``mumu streams status`` shows and ``mumu exporter`` exports: how full each stream
(and KV / Object Store bucket: they are streams too) is, and how far behind each consumer is.

Read from the JetStream API only (``STREAM.LIST``, ``CONSUMER.LIST``, and one
``STREAM.MSG.GET`` per consumer with a backlog for the time of its oldest unacked
message); nothing is consumed and no consumer is created.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from nats.aio.client import Client as NATS

from mumu.broker.jsapi import JetStreamApiError, api
from mumu.contracts import subjects

KV_PREFIX = "KV_"
OBJECT_STORE_PREFIX = "OBJ_"


def kind_of(stream: str) -> str:
    """``kv``, ``object_store`` or ``stream`` (how nats-py names a bucket's stream)."""
    if stream.startswith(KV_PREFIX):
        return "kv"
    if stream.startswith(OBJECT_STORE_PREFIX):
        return "object_store"
    return "stream"


def _limit(value: Any) -> int | None:
    """A stream limit; ``None`` when unlimited (the server says -1 or 0)."""
    return int(value) if isinstance(value, int) and value > 0 else None


@dataclass(frozen=True, slots=True)
class StreamFigures:
    name: str
    kind: str
    messages: int
    bytes: int
    max_messages: int | None
    max_bytes: int | None
    consumers: int
    discard: str

    @property
    def fullness(self) -> float | None:
        """The fuller of messages/max_messages and bytes/max_bytes (0..1); ``None`` when
        the stream has neither limit. A ``discard: new`` stream refuses writes at 1."""
        ratios = [used / limit for used, limit in ((self.messages, self.max_messages),
                                                   (self.bytes, self.max_bytes)) if limit]
        return max(ratios) if ratios else None

    def as_json(self) -> dict[str, Any]:
        full = self.fullness
        return {**asdict(self), "fullness_percent": None if full is None else round(100 * full, 2)}


@dataclass(frozen=True, slots=True)
class ConsumerFigures:
    stream: str
    name: str
    durable: bool
    pending: int
    """Messages matching the filter not yet delivered."""
    ack_pending: int
    """Delivered, not yet acknowledged."""
    redelivered: int
    """Delivered more than once and not yet acknowledged."""
    ack_floor: int
    """Stream sequence below which every message is acknowledged."""
    oldest_unacked_age: float | None
    """Seconds since the oldest message not yet acknowledged (delivered or not) was
    stored; ``None`` when nothing waits."""
    waiting_pulls: int
    """Pull requests waiting: about the live replicas fetching from it."""

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class SourceFigures:
    """A stream's source (``MUMU_INGEST`` sources every workspace's intake stream)."""

    stream: str
    source: str
    lag: int
    """Messages of the source not yet copied."""
    silent_seconds: float | None
    """Seconds since the stream last heard from the source: under a second while sourcing
    works (heartbeats), growing while it does not; ``None``: never heard from."""
    error: str
    """The server's last error setting the source up ("" when none)."""

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Status:
    taken_at: datetime
    streams: tuple[StreamFigures, ...]
    consumers: tuple[ConsumerFigures, ...]
    dead_letters: tuple[tuple[str, int], ...] = ()
    """Letters in ``MUMU_DLQ`` per stage (``mumu.dlq.<stage>.*``), by stage name."""
    sources: tuple[SourceFigures, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "taken_at": self.taken_at.isoformat(),
            "streams": [s.as_json() for s in self.streams],
            "consumers": [c.as_json() for c in self.consumers],
            "dead_letters": dict(self.dead_letters),
            "sources": [s.as_json() for s in self.sources],
        }


async def _pages(nc: NATS, subject: str, key: str) -> list[dict[str, Any]]:
    """Every item of a paged JetStream list (``STREAM.LIST``, ``CONSUMER.LIST.<s>``)."""
    items: list[dict[str, Any]] = []
    while True:
        page = await api(nc, subject, {"offset": len(items)})
        batch = page.get(key) or []
        items += batch
        if not batch or len(items) >= page.get("total", 0):
            return items


def _stream_figures(info: dict[str, Any]) -> StreamFigures:
    config, state = info["config"], info["state"]
    return StreamFigures(
        name=config["name"], kind=kind_of(config["name"]),
        messages=int(state.get("messages", 0)), bytes=int(state.get("bytes", 0)),
        max_messages=_limit(config.get("max_msgs")), max_bytes=_limit(config.get("max_bytes")),
        consumers=int(state.get("consumer_count", 0)), discard=str(config.get("discard", "old")),
    )


def _source_figures(info: dict[str, Any]) -> list[SourceFigures]:
    """From a stream's info: ``active`` is nanoseconds since the source was last heard
    from, -1 for never."""
    found = []
    for source in info.get("sources") or []:
        active = int(source.get("active", -1))
        found.append(SourceFigures(
            stream=info["config"]["name"], source=str(source["name"]),
            lag=int(source.get("lag", 0)),
            silent_seconds=None if active < 0 else round(active / 1e9, 3),
            error=str((source.get("error") or {}).get("description", "")),
        ))
    return found


def _filters(config: dict[str, Any]) -> list[str]:
    if config.get("filter_subject"):
        return [config["filter_subject"]]
    return list(config.get("filter_subjects") or []) or [">"]


async def _oldest_unacked(
    nc: NATS, info: dict[str, Any], first_seq: int, now: datetime
) -> float | None:
    """Age of the first message after the ack floor that the consumer's filter matches."""
    if not info.get("num_pending") and not info.get("num_ack_pending"):
        return None
    start = max(int(info.get("ack_floor", {}).get("stream_seq", 0)) + 1, first_seq)
    stored: list[datetime] = []
    for subject in _filters(info["config"]):
        try:
            found = await api(nc, f"STREAM.MSG.GET.{info['stream_name']}",
                              {"seq": start, "next_by_subj": subject})
        except JetStreamApiError as exc:
            if exc.code == 404:  # nothing of this filter after the floor
                continue
            raise
        stored.append(datetime.fromisoformat(found["message"]["time"]))
    return max(0.0, (now - min(stored)).total_seconds()) if stored else None


def _consumer_figures(info: dict[str, Any], age: float | None) -> ConsumerFigures:
    return ConsumerFigures(
        stream=info["stream_name"], name=info["name"],
        durable=bool(info["config"].get("durable_name")),
        pending=int(info.get("num_pending", 0)), ack_pending=int(info.get("num_ack_pending", 0)),
        redelivered=int(info.get("num_redelivered", 0)),
        ack_floor=int(info.get("ack_floor", {}).get("stream_seq", 0)),
        oldest_unacked_age=age, waiting_pulls=int(info.get("num_waiting", 0)),
    )


async def gather(nc: NATS, *, ephemeral: bool = False) -> Status:
    """Every stream of the account and its consumers (durable ones only, unless
    ``ephemeral``: the gateway's feeds and replays come and go)."""
    now = datetime.now(UTC)
    streams: list[StreamFigures] = []
    consumers: list[ConsumerFigures] = []
    sources: list[SourceFigures] = []
    for info in sorted(await _pages(nc, "STREAM.LIST", "streams"),
                       key=lambda i: str(i["config"]["name"])):
        figures = _stream_figures(info)
        streams.append(figures)
        sources += sorted(_source_figures(info), key=lambda f: f.source)
        if not figures.consumers:
            continue
        first_seq = int(info["state"].get("first_seq", 0))
        listed = await _pages(nc, f"CONSUMER.LIST.{figures.name}", "consumers")
        for c in sorted(listed, key=lambda i: str(i["name"])):
            if not ephemeral and not c["config"].get("durable_name"):
                continue
            consumers.append(_consumer_figures(c, await _oldest_unacked(nc, c, first_seq, now)))
    letters = await _dead_letters(nc) if any(
        s.name == subjects.STREAM_DLQ for s in streams) else ()
    return Status(now, tuple(streams), tuple(consumers), letters, tuple(sources))


async def _dead_letters(nc: NATS) -> tuple[tuple[str, int], ...]:
    """Letters per stage: the DLQ stream's message count per subject
    (``mumu.dlq.<stage>.<ws>``), summed over the workspaces."""
    info = await api(nc, f"STREAM.INFO.{subjects.STREAM_DLQ}",
                     {"subjects_filter": subjects.DLQ.wildcard})
    per_subject: dict[str, int] = info["state"].get("subjects") or {}
    per_stage: dict[str, int] = {}
    for subject, count in per_subject.items():
        stage = subject.split(".")[2]
        per_stage[stage] = per_stage.get(stage, 0) + int(count)
    return tuple(sorted(per_stage.items()))

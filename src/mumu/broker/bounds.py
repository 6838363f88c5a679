"""Storage bounds: how much of a shared stream, bucket or KV one workspace may hold.

The rule (``docs/reliability.md``, "Storage bounds"): no workspace can hold more than
``1/SHARES`` of a shared stream or bucket. Where the bound is a per-workspace stream (the
intake streams feeding ``MUMU_INGEST``) or per-subject limits with a message size cap
(``MUMU_AUDIO``, ``MUMU_PERSISTED``, ``MUMU_CONTROL``, ``MUMU_DLQ``), it is checked here from the
configs; ``MUMU_RESULTS`` is bounded per workspace in messages here and in bytes by the
stages' result budget (``mumu.runtime.result_budget``).
How full each stream is: ``mumu.ops.status`` (the exporter's fullness ratio, alerted at 80 %).
"""

from __future__ import annotations

from typing import Any

from nats.aio.client import Client as NATS

from mumu.broker.jsapi import stream_config
from mumu.contracts import subjects
from mumu.contracts.consumers import DECLARED

SHARES = 4
"""A workspace holds at most a quarter of any shared stream or bucket it can fill."""


class StorageBoundError(RuntimeError):
    """A configuration that would let one workspace fill a shared stream or bucket."""


def workspace_subjects(config: dict[str, Any]) -> int:
    """How many of the stream's subjects a workspace's traffic writes (``<prefix>.*``).

    Replay subjects (``mumu.replay.<durable>.<ws>``) are left out: only an operator
    replays, under the same per-subject limit, and no workspace can start one. The dead
    letters' ``mumu.dlq.*.*`` is one subject per stage (``mumu.dlq.<stage>.<ws>``)."""
    return sum(stage_count() if s == subjects.DLQ.wildcard else 1
               for s in config.get("subjects") or []
               if s.endswith(".*") and not subjects.is_replay(s))


def stage_count() -> int:
    """How many stages dead-letter (every stage with a durable consumer)."""
    return len({consumer.stage for consumer in DECLARED})


def workspace_share(config: dict[str, Any], max_payload: int) -> int | None:
    """Bytes one workspace can hold in the stream through its per-subject limits
    (messages per subject x largest message x the workspace's subjects); None when the
    stream has no per-subject limit or does not refuse at it (``discard_new_per_subject``)."""
    per_subject = int(config.get("max_msgs_per_subject", -1))
    if per_subject <= 0 or not config.get("discard_new_per_subject"):
        return None
    size = int(config.get("max_msg_size", -1))
    largest = size if size > 0 else max_payload
    return per_subject * largest * workspace_subjects(config)


def share_problems(configs: list[dict[str, Any]], max_payload: int) -> list[str]:
    """The streams of ``configs`` whose per-subject limits let one workspace hold more
    than ``1/SHARES`` of ``max_bytes`` (streams bounded in messages only are skipped:
    they have no ``max_msg_size``)."""
    problems = []
    for config in configs:
        share = workspace_share(config, max_payload)
        total = int(config.get("max_bytes", -1))
        if share is None or int(config.get("max_msg_size", -1)) <= 0 or total <= 0:
            continue
        if share * SHARES > total:
            problems.append(
                f"{config['name']}: one workspace may hold {share} bytes, more than "
                f"1/{SHARES} of max_bytes {total}")
    return problems


async def check_intake_share(nc: NATS, intake_max_bytes: int) -> None:
    """``StorageBoundError`` when one workspace's intake stream could fill more than
    ``1/SHARES`` of ``MUMU_INGEST`` (every request reaches it through its intake stream)."""
    ingest = await stream_config(nc, subjects.STREAM_INGEST)
    if ingest is None:
        return
    total = int(ingest.get("max_bytes", -1))
    if total > 0 and intake_max_bytes * SHARES > total:
        raise StorageBoundError(
            f"intake streams of {intake_max_bytes} bytes (MUMU_NATS__INTAKE_MAX_BYTES) let one "
            f"workspace fill more than 1/{SHARES} of {subjects.STREAM_INGEST} ({total} bytes): "
            f"lower it or raise max_bytes in streams/mumu_ingest.json")

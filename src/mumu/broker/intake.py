"""Per-workspace intake streams and the sources of ``MUMU_INGEST``.

Each workspace's requests land in its own ``MUMU_INTAKE_<ws>`` (declared by the template
``streams/workspace/mumu_intake.json``), so a ``Nats-Msg-Id`` only dedupes inside its own
workspace; ``MUMU_INGEST`` has no subjects of its own and sources every intake stream, so
the stages keep one durable consumer for all workspaces (``docs/security.md``).

``converge_sources`` makes ``MUMU_INGEST``'s sources equal to the intake streams that
exist (sources it does not manage are kept). Stream configs have no compare-and-set, so it
loops: list, read, write if short, and check again after every write. Whoever writes last
re-checks after its write, so a source another process added concurrently is never lost.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NATS

from mumu.broker.jsapi import api, stream_config, stream_names
from mumu.contracts import consumers, subjects
from mumu.resources import resource_dir

log = logging.getLogger(__name__)

TEMPLATE = Path("workspace") / "mumu_intake.json"
PLACEHOLDER = "{workspace}"
MAX_ROUNDS = 20


def intake_template(directory: Path | None = None) -> dict[str, Any]:
    """The template as written (``{workspace}`` in its name and subjects)."""
    path = (directory or resource_dir("streams")) / TEMPLATE
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def intake_config(
    workspace: str, *, max_bytes: int | None = None, replicas: int | None = None,
    directory: Path | None = None,
) -> dict[str, Any]:
    """The intake stream config of ``workspace`` (``max_bytes``/``replicas``: overrides)."""
    name = subjects.intake_stream(workspace)  # validates the token
    config = intake_template(directory)
    config["name"] = config["name"].replace(PLACEHOLDER, workspace)
    config["subjects"] = [s.replace(PLACEHOLDER, workspace) for s in config["subjects"]]
    if config["name"] != name:
        raise RuntimeError(f"{TEMPLATE}: the name must be {subjects.INTAKE_STREAM_PREFIX}"
                           f"{PLACEHOLDER} (got {config['name']!r})")
    if max_bytes is not None:
        config["max_bytes"] = max_bytes
    if replicas is not None:
        config["num_replicas"] = replicas
    return config


async def intake_streams(nc: NATS) -> list[str]:
    """The names of every workspace intake stream on the server."""
    return await stream_names(nc, subjects.INTAKE_STREAM_PREFIX)


def wanted_sources(live: list[dict[str, Any]] | None, intakes: list[str]) -> list[dict[str, Any]]:
    """One source per intake stream (its live entry kept as is), plus the sources of
    ``live`` that are not intake streams; in name order so re-applies compare equal."""
    kept = {s["name"]: s for s in live or []}
    wanted = {n: kept.get(n, {"name": n}) for n in intakes}
    for name, source in kept.items():
        if not name.startswith(subjects.INTAKE_STREAM_PREFIX):
            wanted[name] = source
    return [wanted[n] for n in sorted(wanted)]


NO_SOURCE_DEFAULTS: dict[str, Any] = {
    "subjects": [subjects.STREAM_INGEST], "duplicate_window": 120_000_000_000}
"""What the server gives a stream with neither subjects nor sources."""


def ingest_replay_subjects() -> list[str]:
    """``MUMU_INGEST``'s own subjects: the replay subjects of the durables that read it
    (``mumu replay --to-stage``); the requests themselves come from the sources."""
    return [c.replay.wildcard for c in consumers.DECLARED if c.stream == subjects.STREAM_INGEST]


def ingest_shape(sources: list[dict[str, Any]]) -> dict[str, Any]:
    """``MUMU_INGEST``'s subjects, sources and dedupe window for ``sources``.

    No subjects of its own but the stages' replay subjects, and no dedupe window (0,
    allowed only on a stream with sources): a sourced message keeps its ``Nats-Msg-Id``,
    and a window here would drop workspace B's message when A's intake stream held the
    same id. Each intake stream dedupes its own workspace."""
    own = ingest_replay_subjects()
    if not sources:
        return {**NO_SOURCE_DEFAULTS, "subjects": own, "sources": []}
    return {"subjects": own, "sources": sources, "duplicate_window": 0}


def _names(sources: list[dict[str, Any]] | None) -> set[str]:
    return {s["name"] for s in sources or []}


async def converge_sources(nc: NATS) -> bool:
    """Make ``MUMU_INGEST`` source exactly the existing intake streams; True if it wrote.

    ``RuntimeError`` when ``MUMU_INGEST`` does not exist (``mumu streams apply``).
    """
    wrote = False
    for _ in range(MAX_ROUNDS):
        intakes = await intake_streams(nc)
        live = await stream_config(nc, subjects.STREAM_INGEST)
        if live is None:
            raise RuntimeError(
                f"stream {subjects.STREAM_INGEST} does not exist: run `mumu streams apply`"
            )
        sources = wanted_sources(live.get("sources"), intakes)
        shape = ingest_shape(sources)
        if (_names(live.get("sources")) == _names(sources)
                and (live.get("subjects") or []) == shape["subjects"]
                and live.get("duplicate_window", 0) == shape["duplicate_window"]):
            return wrote
        await api(nc, f"STREAM.UPDATE.{subjects.STREAM_INGEST}", {**live, **shape})
        log.info("%s now sources %d intake streams", subjects.STREAM_INGEST, len(intakes))
        wrote = True
    raise RuntimeError(f"{subjects.STREAM_INGEST}: sources did not settle after "
                       f"{MAX_ROUNDS} rounds (intake streams created and removed meanwhile?)")

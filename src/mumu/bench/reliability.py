"""docs/reliability.md's table, rendered from ``benchmarks/results/chaos-*.json``.

The chaos suite (tests/chaos, and tests/cluster for the cluster node) writes one file per
scenario; ``mumu bench report --reliability docs/reliability.md`` rewrites the section
between the ``<!-- reliability -->`` markers, and a test fails when the document and the
files disagree.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MARKERS = ("<!-- reliability -->\n", "<!-- /reliability -->")
ORDER = ("kill-ingest", "kill-transcribe", "kill-reason", "kill-persist", "kill-gateway",
         "nats-restart", "cluster-node", "postgres-outage", "slow-reason")
"""Scenarios in the order of the run; any other ``chaos-*.json`` follows by name."""
HEADER = ("| scenario | load | faults injected | lost | duplicated | dead-lettered "
          "| recovery time | result |\n|---|---|---|---|---|---|---|---|\n")


def _load(record: dict[str, Any]) -> str:
    load = record.get("load", {})
    parts = [f"{load.get('text', 0)} text", f"{load.get('audio', 0)} audio"]
    if load.get("live_streams"):
        parts.append(f"{load['live_streams']} live streams ({load['live_utterances']} "
                     "utterances)")
    return f"{record['sent']} asks: " + ", ".join(parts)


def _recovery(record: dict[str, Any]) -> str:
    seconds = record.get("recovery_seconds")
    return "none" if seconds is None else f"{seconds} s"


def row(record: dict[str, Any], name: str) -> str:
    cells = [
        f"{record['scenario']}",
        _load(record),
        record["faults"],
        str(record["lost"]),
        str(record["duplicated"]),
        str(record["dead_lettered"]),
        _recovery(record),
        f"**{record['result']}** ({record['when']}, `benchmarks/results/{name}`)",
    ]
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def files(results: Path) -> list[Path]:
    found = {p.name.removeprefix("chaos-").removesuffix(".json"): p
             for p in results.glob("chaos-*.json")}
    known = [found.pop(s) for s in ORDER if s in found]
    return known + [found[s] for s in sorted(found)]


def table(results: Path) -> str:
    rows = [row(json.loads(p.read_text()), p.name) for p in files(results)]
    if not rows:
        return HEADER + "| not run yet (`pytest -m chaos`) | | | | | | | |\n"
    return HEADER + "\n".join(rows) + "\n"


def with_table(document: str, results: Path) -> str:
    """``document`` with its table between the markers rendered from ``results``."""
    start, end = MARKERS
    if start not in document or end not in document:
        raise ValueError(f"the document has no {start.strip()} ... {end} section")
    head, _, rest = document.partition(start)
    _, _, tail = rest.partition(end)
    return f"{head}{start}{table(results)}{end}{tail}"

"""Where benchmark results go: ``benchmarks/results/<name>.json`` (and a Markdown table)."""

from __future__ import annotations

import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def results_dir() -> Path:
    return Path(os.environ.get("MUMU_BENCH_RESULTS", "benchmarks/results"))


def write_result(name: str, result: dict[str, Any]) -> Path:
    """Write ``result`` with the machine it ran on; returns the JSON path."""
    out = results_dir()
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": name,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        **result,
    }
    path = out / f"{name}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path

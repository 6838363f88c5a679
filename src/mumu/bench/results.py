"""Where benchmark results go: ``benchmarks/results/<name>.json`` (and a Markdown table)."""

from __future__ import annotations

import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class BenchResultSettings(BaseSettings):
    """Where ``mumu bench`` writes (tests point it at a temporary folder)."""

    model_config = SettingsConfigDict(env_prefix="MUMU_", extra="ignore")

    bench_results: Path = Field(
        default=Path("benchmarks/results"),
        description="folder benchmark result files are written to",
    )


def results_dir() -> Path:
    return BenchResultSettings().bench_results


def write_result(name: str, result: dict[str, Any]) -> Path:
    """Write ``result`` with the machine it ran on into ``MUMU_BENCH_RESULTS`` (default
    ``benchmarks/results``); returns the JSON path."""
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

"""Runs ``mumu bench <name>`` as a user would, into a temporary results folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def run_bench(
    tmp_path: Path, name: str, *args: str, timeout: float = 180, result: str | None = None,
) -> dict[str, Any]:
    """The result file ``mumu bench <name> <args>`` wrote (``<result or name>.json``);
    fails with its stderr."""
    env = {**os.environ, "MUMU_BENCH_RESULTS": str(tmp_path), "MUMU_LOG_LEVEL": "WARNING"}
    done = subprocess.run(
        [sys.executable, "-m", "mumu", "bench", name, *args],
        env=env, capture_output=True, text=True, timeout=timeout, check=False, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    written: dict[str, Any] = json.loads((tmp_path / f"{result or name}.json").read_text())
    return written

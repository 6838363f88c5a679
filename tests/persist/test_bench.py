"""``mumu bench persist`` runs end to end (small): every round's rows checked, ratios kept."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_bench_persist_smoke(tmp_path: Path) -> None:
    env = {**os.environ, "MUMU_BENCH_RESULTS": str(tmp_path), "MUMU_LOG_LEVEL": "WARNING"}
    done = subprocess.run(
        [sys.executable, "-m", "mumu", "bench", "persist", "--events", "600", "--rounds", "1",
         "--batch-rows", "64", "--workspaces", "2"],
        env=env, capture_output=True, text=True, timeout=180, check=False, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "persist.json").read_text())
    assert set(result["rows_per_s"]) == {"plain", "plain_unnest", "mumu"}
    assert all(rate > 0 for rate in result["rows_per_s"].values())
    assert result["ratio"] > 0 and result["write_path"]["ratio"] > 0
    assert result["floor"] == 0.8

"""``mumu bench gateway`` runs end to end (small) and records ratio, floors and results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_bench_gateway_smoke(tmp_path: Path) -> None:
    env = {**os.environ, "MUMU_BENCH_RESULTS": str(tmp_path), "MUMU_LOG_LEVEL": "WARNING"}
    done = subprocess.run(
        [sys.executable, "-m", "mumu", "bench", "gateway", "--sessions", "40", "--rate", "200",
         "--seconds", "1", "--burst", "5"],
        env=env, capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "gateway.json").read_text())
    assert result["sessions"] == 40
    assert result["met"]["all_delivered"]
    for side in ("mumu", "baseline"):
        assert result[side]["latency"]["received"] == 200
        assert result[side]["throughput"]["received"] == 200
        assert result[side]["memory_per_connection_kib"] > 0
    assert result["floor"] == {"p99_ms": 50.0, "rate_ratio": 0.7}
    assert result["rate_ratio"] > 0

"""``mumu bench replay`` runs end to end (small): both comparisons measured, floors applied,
and the README table quotes its result."""

from __future__ import annotations

from pathlib import Path

from mumu.bench.report import table
from tests.bench_run import run_bench


def test_bench_replay_smoke(tmp_path: Path) -> None:
    result = run_bench(tmp_path, "replay", "--messages", "3000", "--rounds", "2")
    assert result["messages"] == 3000
    for side in ("dry_run_read", "to_stage_republish"):
        report = result[side]
        assert len(report["mumu"]["rounds"]) == len(report["raw_nats_py"]["rounds"]) == 2
        low, high = report["ratio_min_max"]
        assert 0 < low <= report["ratio"] <= high
    met = result["met"]
    assert met["read_ratio"] == (result["dry_run_read"]["ratio"] >= 0.8)
    assert met["republish_ratio"] == (result["to_stage_republish"]["ratio"] >= 0.8)
    assert met["read_rate"] == (result["dry_run_read"]["mumu"]["msgs_per_s"] >= 20_000)
    rows = [line for line in table(tmp_path).splitlines() if "replay:" in line]
    assert len(rows) == 2 and "ordered consumer" in rows[0] and "pipelined" in rows[1]

"""``mumu bench persist`` runs end to end (small): every round's rows checked, ratios kept."""

from __future__ import annotations

from pathlib import Path

from tests.bench_run import run_bench


def test_bench_persist_smoke(tmp_path: Path) -> None:
    result = run_bench(tmp_path, "persist", "--events", "600", "--rounds", "1",
                       "--batch-rows", "64", "--workspaces", "2")
    assert set(result["rows_per_s"]) == {"plain", "plain_unnest", "mumu"}
    assert all(rate > 0 for rate in result["rows_per_s"].values())
    assert result["ratio"] > 0 and result["write_path"]["ratio"] > 0
    assert result["floor"] == 0.8

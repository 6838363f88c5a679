"""``mumu bench persist`` runs end to end (small): every round's rows checked, ratios kept."""

from __future__ import annotations

from pathlib import Path

from tests.bench_run import run_bench


def test_bench_persist_smoke(tmp_path: Path) -> None:
    result = run_bench(tmp_path, "persist", "--events", "600", "--rounds", "1",
                       "--batch-rows", "64", "--workspaces", "2")
    sides = {"plain", "plain_unnest", "mumu"}
    assert set(result["rows_per_s"]) == sides
    assert all(rate > 0 for rate in result["rows_per_s"].values())
    # a rate only counts when every published row was found stored, on every side
    assert result["rows_checked"] == dict.fromkeys(sides, result["events_per_round"])
    assert result["floor"] == 0.8
    for report in (result, result["write_path"]):
        assert report["ratio"] > 0
        low, high = report["ratio_min_max"]
        assert 0 < low <= report["ratio"] <= high
        assert report["ratio_vs_plain_unnest"] > 0
        assert report["floor_met"] == (report["ratio"] >= result["floor"])
    assert result["write_path"]["rows_per_round"] > 0
    assert set(result["write_path"]["rows_per_s"]) == sides
    assert set(result["python_cpu_us_per_row"]) == sides

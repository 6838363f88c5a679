"""``mumu bench runtime`` runs end to end (small): both chains move every event once."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench_run import run_bench


def test_bench_runtime_smoke(tmp_path: Path) -> None:
    result = run_bench(tmp_path, "runtime", "--events", "400", "--latency-events", "100",
                       "--rounds", "1", "--concurrency", "16")
    for side in ("raw_nats_py", "mumu_runtime"):
        assert result[side]["rounds_events_moved"] == [400], side  # every event, exactly once
        assert result[side]["throughput_events_per_s"] > 0
        assert set(result[side]["per_hop_ms"]) == {"p50", "p99", "max"}
    assert result["faststream"]["throughput_events_per_s"] > 0
    raw, mumu = result["raw_nats_py"], result["mumu_runtime"]
    # one round: the ratio is the two measured rates' (to the rounding of each)
    (round_ratio,) = result["round_ratios"]
    expected = mumu["rounds_events_per_s"][0] / raw["rounds_events_per_s"][0]
    assert round_ratio == pytest.approx(expected, rel=0.01)
    assert result["throughput_ratio"] == round_ratio
    assert result["faststream_throughput_ratio"] == pytest.approx(
        result["faststream"]["throughput_events_per_s"] / raw["throughput_events_per_s"],
        rel=0.01)
    assert mumu["per_hop_ms"]["p50"] <= mumu["per_hop_ms"]["p99"] <= mumu["per_hop_ms"]["max"]
    assert result["floor"] == {"throughput_ratio": 0.7, "p99_per_hop_ms": 20.0}
    # the verdict is the floor applied to what was measured, both ways
    assert result["meets_floor"] == (
        result["throughput_ratio"] >= 0.7 and mumu["per_hop_ms"]["p99"] <= 20.0)

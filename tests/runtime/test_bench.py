"""``mumu bench runtime`` runs end to end (small): both chains move every event once."""

from __future__ import annotations

from pathlib import Path

from tests.bench_run import run_bench


def test_bench_runtime_smoke(tmp_path: Path) -> None:
    result = run_bench(tmp_path, "runtime", "--events", "400", "--latency-events", "100",
                       "--rounds", "1", "--concurrency", "16")
    for side in ("raw_nats_py", "mumu_runtime"):
        assert result[side]["rounds_events_moved"] == [400], side  # every event, exactly once
        assert result[side]["throughput_events_per_s"] > 0
        assert set(result[side]["per_hop_ms"]) == {"p50", "p99", "max"}
    assert result["faststream"]["throughput_events_per_s"] > 0
    assert result["throughput_ratio"] > 0
    assert result["floor"] == {"throughput_ratio": 0.7, "p99_per_hop_ms": 20.0}
    assert isinstance(result["meets_floor"], bool)

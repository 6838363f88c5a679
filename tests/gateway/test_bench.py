"""``mumu bench gateway`` runs end to end (small) and records ratio, floors and results."""

from __future__ import annotations

from pathlib import Path

from tests.bench_run import run_bench


def test_bench_gateway_smoke(tmp_path: Path) -> None:
    result = run_bench(tmp_path, "gateway", "--sessions", "40", "--rate", "1000",
                       "--seconds", "1", "--burst", "5", "--rounds", "2")
    assert result["sessions"] == 40
    assert result["met"]["all_delivered"]
    for side in ("mumu", "baseline"):
        assert result[side]["latency"]["received"] == 1000
        assert result[side]["throughput"]["received"] == 200
        assert result[side]["memory_per_connection_kib"] > 0
    assert result["floor"] == {"p99_ms": 50.0, "rate_ratio": 0.7}
    assert result["rate_ratio"] > 0
    assert len(result["mumu"]["throughput_rates_per_s"]) == 2  # paired rounds
    # the gateway process really worked for the messages (CPU from /proc in 10 ms clock
    # ticks: 1,000 deltas take several)
    assert result["mumu"]["latency"]["cpu_us_per_message_gateway"] > 0

"""``mumu bench gateway`` runs end to end (small) and records ratio, floors and results."""

from __future__ import annotations

from pathlib import Path

from tests.bench_run import run_bench


def test_bench_gateway_smoke(tmp_path: Path) -> None:
    result = run_bench(tmp_path, "gateway", "--sessions", "40", "--rate", "1000",
                       "--seconds", "1", "--burst", "5", "--rounds", "3")
    assert result["sessions"] == 40
    assert result["met"]["all_delivered"]
    for side in ("mumu", "baseline"):  # both sides in the same run
        assert result[side]["latency"]["received"] == 1000
        assert result[side]["throughput"]["received"] == 200
        assert result[side]["memory_per_connection_kib"] > 0
        assert len(result[side]["throughput_rates_per_s"]) == 3  # one per round
    assert result["floor"] == {"p99_ms": 50.0, "rate_ratio": 0.8, "rate_ratio_round": 0.7}
    rates = {side: result[side]["throughput_rates_per_s"] for side in ("mumu", "baseline")}
    # the ratios are the rounds' own rates divided, and their medians are reported
    assert result["rate_ratios"] == [round(m / b, 3) for m, b in zip(
        rates["mumu"], rates["baseline"], strict=True)]
    assert result["rate_ratio"] == sorted(result["rate_ratios"])[1]
    # met: the median reaches 0.8 and no round falls below 0.7
    assert result["met"]["rate"] == (result["rate_ratio"] >= 0.8
                                     and min(result["rate_ratios"]) >= 0.7)
    # the gateways really worked for the messages (CPU from /proc in 10 ms clock ticks:
    # 1,000 deltas take several)
    assert result["mumu"]["latency"]["cpu_us_per_message_gateway"] > 0


def test_bench_gateway_rounds_past_the_per_workspace_bound(tmp_path: Path) -> None:
    """A round of 25,000 deltas is more than MUMU_RESULTS keeps for one workspace (20,000):
    the benchmark spreads its sessions over workspaces, and every delta arrives."""
    result = run_bench(tmp_path, "gateway", "--sessions", "10", "--rate", "500",
                       "--seconds", "1", "--burst", "2500", "--rounds", "2")
    assert result["mumu"]["throughput"]["received"] == 25_000
    assert result["met"]["all_delivered"]

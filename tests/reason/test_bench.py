"""``mumu bench reason`` runs end to end (small), into a temporary results folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench_run import run_bench


def test_bench_reason_smoke(tmp_path: Path) -> None:
    result = run_bench(tmp_path, "reason", "--requests", "4", "--warmup", "1", "--max-tokens", "4")
    assert result["benchmark"] == "reason"
    assert result["requests"] == 4
    direct, mumu = result["direct_first_token_ms"], result["mumu_first_delta_ms"]
    for summary in (direct, mumu):
        assert set(summary) == {"p50", "p90", "mean", "min", "max"}
        assert 0 < summary["min"] <= summary["p50"] <= summary["p90"] <= summary["max"]
    assert result["ratio_p50"] == pytest.approx(mumu["p50"] / direct["p50"], rel=0.01)
    assert set(result["overhead_ms"]) == {"p50", "p90"}
    assert result["floor"] == "overhead p50 <= 15.0 ms"
    assert result["met"] == (result["overhead_ms"]["p50"] <= 15.0)
    assert "SmolLM2-135M-Instruct" in result["backend"]

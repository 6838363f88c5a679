"""``mumu bench transcribe`` runs end to end on one clip and records ratios and floors."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.audio.conftest import SPEECH
from tests.bench_run import run_bench


def test_bench_transcribe_smoke(tmp_path: Path) -> None:
    result = run_bench(tmp_path, "transcribe", "--clips", str(SPEECH), "--pattern", "en01.wav",
                       "--repeat", "1", "--concurrency", "2", "--batch-window-ms", "20")
    assert result["benchmark"] == "transcribe"
    assert result["clips"] == ["en01.wav"]
    assert 3.9 < result["audio_seconds"] < 4.3
    for mode in ("sequential", "concurrent"):
        assert result[mode]["throughput_ratio"] > 0
        for side in ("direct", "pipeline"):
            assert result[mode][side]["wall_s"] > 0
            assert result[mode][side]["latency_p50_ms"] > 0
        direct, pipeline = result[mode]["direct"], result[mode]["pipeline"]
        # the ratio is computed from the two measured wall times (direct / pipeline)
        assert result[mode]["throughput_ratio"] == pytest.approx(
            direct["wall_s"] / pipeline["wall_s"], rel=0.02, abs=0.002)
    assert result["sequential"]["outside_model_ms"]["p50"] > 0
    # the batched run moved the clip once, in one batch of one (reported by on_batch)
    assert result["micro_batching"]["batch_sizes"] == [1]
    assert result["floor"] == {"throughput_ratio": 0.95, "overhead_p50_ms_target": 30.0,
                               "overhead_checked_on": "sequential.outside_model_ms.p50"}
    ratios = [result[mode]["throughput_ratio"] for mode in ("sequential", "concurrent")]
    assert result["meets_floor"] == all(r >= 0.95 for r in ratios)
    assert result["meets_overhead_target"] == (
        result["sequential"]["outside_model_ms"]["p50"] <= 30.0)

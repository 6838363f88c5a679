"""`mumu bench live` runs end to end with a tiny configuration (one held-out clip, no
capacity rounds) and writes benchmarks/results/live.json from what the run measured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mumu.bench.live_measure import wer
from tests.bench_run import run_bench

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

CLIPS = Path(__file__).parents[2] / "benchmarks" / "data" / "live"


def test_bench_live_runs_and_writes_its_measurements(tmp_path: Path) -> None:
    result = run_bench(tmp_path, "live", "--clips", str(CLIPS), "--limit", "1",
                       "--max-streams", "0", "--max-tokens", "4", timeout=540)
    ref = json.loads((CLIPS / "references.json").read_text())["live01.wav"]["text"]
    assert result["clips"] == ["live01.wav"]
    texts = result["texts"]["live01.wav"]
    # the WER in the file is the WER of the texts the run got
    assert result["wer_percent"]["live"] == wer([(ref, texts["live"])])
    assert result["wer_percent"]["whole_file"] == wer([(ref, texts["whole_file"])])
    assert result["wer_percent"]["live"] <= 25  # the live final is the sentence
    ptt = result["push_to_talk"]
    for measured in (ptt["stream_end_to_final_ms"], ptt["stream_end_to_first_delta_ms"],
                     result["hands_free"]["speech_end_to_final_ms"],
                     result["upload"]["publish_to_first_delta_ms"]):
        assert measured["n"] == 1 and measured["p50"] > 0
    assert result["word_commit_ms"]["n"] >= len(ref.split()) - 1  # one per word of the final
    # the live utterances the run made: a warm-up, one push-to-talk, one hands-free
    finals = result["finals_without_a_decode"]
    assert finals["promoted"] + finals["decoded"] == 3
    assert result["met"]["ptt_final"] == (ptt["stream_end_to_final_ms"]["p50"] <= 400)
    assert result["capacity"]["rounds"] == {}

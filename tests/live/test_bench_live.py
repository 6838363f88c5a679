"""`mumu bench live` runs end to end with a tiny configuration (one held-out clip, no
warm-up, no capacity rounds) through a real gateway process (the default websocket
driver), and writes benchmarks/results/live.json from what the run measured: the gateway
counted the streams and the upload it carried, and every latency is of events that came
back on its sockets after the audio went out."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from mumu.bench.live_measure import wer, words
from tests.bench_run import run_bench

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

CLIPS = Path(__file__).parents[2] / "benchmarks" / "data" / "live"
FRAME_SECONDS = 0.1


def test_bench_live_runs_through_the_gateway_and_writes_its_measurements(
    tmp_path: Path,
) -> None:
    result = run_bench(tmp_path, "live", "--clips", str(CLIPS), "--limit", "1",
                       "--max-streams", "0", "--max-tokens", "4", "--no-warm-up",
                       timeout=540)
    ref = json.loads((CLIPS / "references.json").read_text())["live01.wav"]["text"]
    assert result["clips"] == ["live01.wav"]
    assert (result["driver"], result["warm_up"]) == ("websocket", False)
    # the gateway carried them: two live streams (push-to-talk, hands-free) and one
    # upload, and sent a final of each to a socket; the broker refused it nothing
    gateway = result["driver_counts"]["gateway"]
    assert gateway["asks"] == {"live": 2.0, "audio": 1.0}
    assert gateway["events_sent"]["transcript.final"] == 3
    assert gateway["events_sent"]["answer.delta"] >= 2  # push-to-talk and upload answered
    assert gateway["permission_violations"] == 0
    # every 100 ms of the clip went out as a frame, twice (and hands-free silence after)
    seconds = (CLIPS / "live01.wav").stat().st_size / 32_000
    assert result["driver_counts"]["frames_sent"] >= 2 * math.floor(seconds / FRAME_SECONDS)
    texts = result["texts"]["live01.wav"]
    # the WER in the file is the WER of the texts the run got
    assert result["wer_percent"]["live"] == wer([(ref, texts["live"])])
    assert result["wer_percent"]["whole_file"] == wer([(ref, texts["whole_file"])])
    assert result["wer_percent"]["live"] <= 25  # the live final is the sentence
    assert result["wer_percent"]["whole_file"] <= 25
    ptt, up = result["push_to_talk"], result["upload"]
    hands_free = result["hands_free"]["speech_end_to_final_ms"]
    for measured in (ptt["stream_end_to_final_ms"], ptt["stream_end_to_first_delta_ms"],
                     hands_free, up["upload_to_final_ms"], up["upload_to_first_delta_ms"]):
        assert measured["n"] == 1 and measured["p50"] > 0  # after the audio went out
    # an answer is of a final: its first delta comes after it, on both paths
    assert ptt["stream_end_to_first_delta_ms"]["p50"] > ptt["stream_end_to_final_ms"]["p50"]
    assert up["upload_to_first_delta_ms"]["p50"] > up["upload_to_final_ms"]["p50"]
    # one commit latency per timed word of the final (word_timestamps reached the stream)
    assert result["word_commit_ms"]["n"] == len(words(texts["live"]))
    # the live utterances the run made: one push-to-talk, one hands-free
    finals = result["finals_without_a_decode"]
    assert finals["promoted"] + finals["decoded"] == 2
    assert result["met"]["ptt_final"] == (ptt["stream_end_to_final_ms"]["p50"] <= 400)
    assert result["capacity"]["rounds"] == {}

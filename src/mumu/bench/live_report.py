"""The result file of `mumu bench live`: the measurements of one run, summarised, with
the targets of issue 16 and whether each was met."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mumu.bench.live_measure import ms, wer

TARGETS = {"ptt_final_p50_ms": 400, "ptt_first_delta_p50_ms": 700,
           "hands_free_over_silence_ms": 400, "word_commit_p50_ms": 1500,
           "wer_points_over_whole_file": 2.0, "capacity_streams": 2}
PATHS = {
    "websocket": {
        "live": "GET /api/ws of a mumu gateway process: stream.start (pcm16, 16 kHz), "
                "binary frames, stream.end; results read on the same socket",
        "upload": "POST /api/ask (multipart audio) to the same gateway; results read on a "
                  "websocket of the ask's session opened before the upload",
    },
    "nats": {
        "live": "NATS producer subjects (mumu.ingest.live, mumu.ingest.chunk), a workspace "
                "producer's credentials; results by core NATS subscriptions",
        "upload": "mumu.ingest.audio (the producer's upload path); results as for live",
    },
}


@dataclass
class Runs:
    driver: str
    ptt: list[dict[str, Any]]
    up: list[dict[str, Any]]
    hf: list[float]
    cap: dict[str, Any]
    silence_s: float
    promoted: dict[str, float]
    seen: dict[str, Any] = field(default_factory=dict)
    """What the way in counted (the gateway's metrics, frames sent), if anything."""


def result(args: Any, names: list[str], refs: dict[str, Any], runs: Runs) -> dict[str, Any]:
    ptt, up, hf, cap, silence_s = runs.ptt, runs.up, runs.hf, runs.cap, runs.silence_s
    ptt_final = ms([p["final_s"] for p in ptt])
    ptt_delta = ms([p["delta_s"] for p in ptt if p["delta_s"] is not None])
    hands = ms(hf)
    commit = ms([x for p in ptt for x in p["commit_s"]])
    live_wer = wer([(refs[n]["text"], p["text"]) for n, p in zip(names, ptt, strict=True)])
    file_wer = wer([(refs[n]["text"], u["text"]) for n, u in zip(names, up, strict=True)])
    met = {
        "ptt_final": _le(ptt_final["p50"], TARGETS["ptt_final_p50_ms"]),
        "ptt_first_delta": _le(ptt_delta["p50"], TARGETS["ptt_first_delta_p50_ms"]),
        "hands_free": _le(hands["p50"], silence_s * 1000 + TARGETS["hands_free_over_silence_ms"]),
        "word_commit": _le(commit["p50"], TARGETS["word_commit_p50_ms"]),
        "wer": live_wer - file_wer <= TARGETS["wer_points_over_whole_file"],
        "capacity": cap["streams_kept_up"] >= TARGETS["capacity_streams"],
    }
    return {
        "clips": names, "model": args.model, "cpu_threads": args.cpu_threads,
        "driver": runs.driver, "paths": PATHS[runs.driver], "driver_counts": runs.seen,
        "warm_up": args.warm_up,
        "silence_s": silence_s,
        "push_to_talk": {"stream_end_to_final_ms": ptt_final,
                         "stream_end_to_first_delta_ms": ptt_delta},
        "hands_free": {"speech_end_to_final_ms": hands},
        "word_commit_ms": commit,
        "upload": {"upload_to_final_ms": ms([u["final_s"] for u in up]),
                   "upload_to_first_delta_ms": ms([u["delta_s"] for u in up])},
        "wer_percent": {"live": live_wer, "whole_file": file_wer,
                        "live_vs_whole_file": wer([(u["text"], p["text"])
                                                   for u, p in zip(up, ptt, strict=True)])},
        "capacity": cap,
        "finals_without_a_decode": runs.promoted,
        "targets": TARGETS, "met": met,
        "texts": {n: {"live": p["text"], "whole_file": u["text"]}
                  for n, p, u in zip(names, ptt, up, strict=True)},
    }


def _le(value: float | None, bound: float) -> bool:
    return value is not None and value <= bound

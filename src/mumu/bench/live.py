"""Live speech: push-to-talk and hands-free streams vs the upload path, WER and capacity.

Held-out clips (``benchmarks/data/live``) are played at real-time pace as live streams
(NATS producer subjects today; ``live_driver.py`` is the one interface a websocket driver
replaces) and, in the same run, sent whole through the upload path (``mumu.ingest.audio``,
what ``POST /api/ask`` publishes). Ingest, transcribe and reason (the default embedded
model) run in this process on an embedded nats-server. Measured:

- push-to-talk: the last chunk carries the end → ``transcript.final`` and → the first
  answer delta;
- hands-free: the clip then silence, no end: end of speech (the last word's end, sent) →
  ``transcript.final``;
- word commit latency: a word's end sent → the first partial that commits it;
- WER of the live finals and of whole-file transcription of the same clips (vs the
  references, and live vs whole-file);
- upload path: publish → transcript final and → first answer delta;
- capacity: N streams at once (no answers) for N = 1, 2, ...: a stream keeps up when its
  stream.end → final stays under ``--keep-up-ms``; capacity is the largest N all kept up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats

from mumu.bench.live_driver import NatsLiveDriver
from mumu.bench.live_measure import Arrived, Played, Recorder, commit_latencies, ms, play, wer
from mumu.bench.live_run import pipeline
from mumu.bench.results import write_result
from mumu.broker.embedded import EmbeddedNats
from mumu.broker.streams import apply_all
from mumu.broker.workspaces import ensure_workspace
from mumu.contracts import headers as h
from mumu.contracts import subjects
from mumu.contracts.options import AudioOptions
from mumu.settings import Settings
from mumu.stages.transcribe.engine import wav_to_float

WS = "bench-live"
TARGETS = {"ptt_final_p50_ms": 400, "ptt_first_delta_p50_ms": 700,
           "hands_free_over_silence_ms": 400, "word_commit_p50_ms": 1500,
           "wer_points_over_whole_file": 2.0, "capacity_streams": 2}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clips", type=Path, default=Path("benchmarks/data/live"),
                        help="held-out clips with a references.json")
    parser.add_argument("--limit", type=int, default=0, help="use the first N clips (0: all)")
    parser.add_argument("--max-streams", type=int, default=4,
                        help="capacity: try up to this many concurrent streams")
    parser.add_argument("--capacity-clips", type=int, default=3,
                        help="clips each concurrent stream plays per capacity round")
    parser.add_argument("--keep-up-ms", type=float, default=1500.0,
                        help="a stream keeps up while stream.end -> final p50 stays below this")
    parser.add_argument("--cpu-threads", type=int, default=2)
    parser.add_argument("--model", default="base")
    parser.add_argument("--max-tokens", type=int, default=32,
                        help="answer length (only the first delta is measured)")


def need(event: Arrived | None) -> Arrived:
    if event is None:  # (waited for before: cannot happen)
        raise RuntimeError("an event waited for is missing")
    return event


def silence(seconds: float) -> Any:
    import numpy as np

    rng = np.random.default_rng(1)
    return (rng.standard_normal(int(seconds * 16_000)) * 0.002).astype(np.float32)


async def push_to_talk(driver: NatsLiveDriver, rec: Recorder, audio: Any,
                       answer: bool = True) -> dict[str, Any]:
    stream = await driver.open(f"ptt-{uuid.uuid4().hex[:8]}",
                               AudioOptions(language="en", word_timestamps=True, answer=answer))
    rid = f"{stream.request_id}-0"
    played = await play(stream, audio, end=True)
    ended = played.sent[-1]
    await rec.wait(lambda: rec.first(rid, "final") is not None
                   and (not answer or rec.first(rid, "delta") is not None
                        or rec.first(rid, "answer") is not None), 120)
    final = need(rec.first(rid, "final"))
    delta = rec.first(rid, "delta")
    return {"rid": rid, "text": final.body["text"], "final_s": final.at - ended,
            "delta_s": (delta.at - ended) if delta else None,
            "commit_s": commit_latencies(rec, rid, played),
            "model_s": float(final.body.get("compute_seconds") or 0.0),
            "audio_s": played.positions[-1]}


async def hands_free(driver: NatsLiveDriver, rec: Recorder, audio: Any,
                     silence_s: float) -> float:
    stream = await driver.open(f"hf-{uuid.uuid4().hex[:8]}",
                               AudioOptions(language="en", word_timestamps=True, answer=False))
    rid = f"{stream.request_id}-0"
    played = Played()
    await play(stream, audio, end=False, played=played)
    # the microphone stays open: silence goes on until the final comes, then the end
    stop = asyncio.Event()
    tail = asyncio.create_task(play(stream, silence(silence_s + 5.0), end=True, played=played,
                                    stop=stop))
    try:
        await rec.wait(lambda: rec.first(rid, "final") is not None, 120)
    finally:
        stop.set()
        await tail
    final = need(rec.first(rid, "final"))
    spoken = [w for s in final.body["segments"] for w in (s.get("words") or [])]
    speech_end = float(spoken[-1]["end"]) if spoken else float(final.body["segments"][0]["end"])
    return final.at - played.sent_at(speech_end)


async def upload(nc: Any, rec: Recorder, data: bytes) -> dict[str, Any]:
    rid = uuid.uuid4().hex
    sent = time.monotonic()
    await nc.jetstream().publish(
        subjects.INGEST_AUDIO.for_workspace(WS), data,
        headers={h.CONTENT_TYPE: "audio/wav", h.SESSION: f"up-{rid[:8]}", h.REQUEST_ID: rid,
                 h.MSG_ID: rid, h.LANGUAGE: "en"})
    await rec.wait(lambda: rec.first(rid, "final") is not None
                   and rec.first(rid, "delta") is not None, 120)
    final, delta = need(rec.first(rid, "final")), need(rec.first(rid, "delta"))
    return {"text": final.body["text"], "final_s": final.at - sent, "delta_s": delta.at - sent}


async def capacity(driver: NatsLiveDriver, rec: Recorder, clips: list[Any], args: Any
                   ) -> dict[str, Any]:
    rounds: dict[str, Any] = {}
    best = 0
    for n in range(1, args.max_streams + 1):
        async def one_stream() -> list[dict[str, Any]]:
            return [await push_to_talk(driver, rec, clip, answer=False)
                    for clip in clips[:args.capacity_clips]]

        started = time.monotonic()
        runs = [x for got in await asyncio.gather(*(one_stream() for _ in range(n)))
                for x in got]
        latencies = [r["final_s"] for r in runs]
        summary = ms(latencies)
        kept_up = summary["p50"] is not None and summary["p50"] <= args.keep_up_ms
        rounds[str(n)] = {
            "stream_end_to_final_ms": summary, "kept_up": kept_up,
            "wall_s": round(time.monotonic() - started, 2),
            # model seconds per second of audio, per stream (the live decodes of the
            # last utterance: every step, every pause, the final's if any)
            "model_seconds_per_audio_second": round(
                sum(r["model_s"] for r in runs) / max(sum(r["audio_s"] for r in runs), 1e-9), 3),
        }
        if not kept_up:
            break
        best = n
    return {"streams_kept_up": best, "rounds": rounds, "keep_up_ms": args.keep_up_ms}


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    refs = json.loads((args.clips / "references.json").read_text())
    names = sorted(refs)[: args.limit or None]
    data = {n: (args.clips / n).read_bytes() for n in names}
    audio = {n: wav_to_float(d) for n, d in data.items()}
    rec = Recorder()
    with tempfile.TemporaryDirectory() as tmp:
        async with EmbeddedNats(Path(tmp) / "nats") as server:
            nc = await nats.connect(server.url)
            await apply_all(nc)
            await ensure_workspace(nc, WS)
            driver = NatsLiveDriver(nc, WS, rec.on_event)
            await driver.start()
            async with pipeline(server.url, Path(tmp), args) as live:
                await push_to_talk(driver, rec, audio[names[0]])  # warm-up: every path
                await upload(nc, rec, data[names[0]])
                ptt = [await push_to_talk(driver, rec, audio[n]) for n in names]
                up = [await upload(nc, rec, data[n]) for n in names]
                hf = [await hands_free(driver, rec, audio[n], live.silence) for n in names]
                cap = await capacity(driver, rec, [audio[n] for n in names], args)
                promoted = live.stream_stats()
            await driver.close()
            await nc.drain()
    return _result(args, names, refs, Runs(ptt, up, hf, cap, live.silence, promoted))


@dataclass
class Runs:
    ptt: list[dict[str, Any]]
    up: list[dict[str, Any]]
    hf: list[float]
    cap: dict[str, Any]
    silence_s: float
    promoted: dict[str, float]


def _result(args: Any, names: list[str], refs: dict[str, Any], runs: Runs) -> dict[str, Any]:
    ptt, up, hf, cap, silence_s, promoted = (runs.ptt, runs.up, runs.hf, runs.cap,
                                             runs.silence_s, runs.promoted)
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
        "driver": "nats producer subjects (websocket: same driver interface, not yet)",
        "silence_s": silence_s,
        "push_to_talk": {"stream_end_to_final_ms": ptt_final,
                         "stream_end_to_first_delta_ms": ptt_delta},
        "hands_free": {"speech_end_to_final_ms": hands},
        "word_commit_ms": commit,
        "upload": {"publish_to_final_ms": ms([u["final_s"] for u in up]),
                   "publish_to_first_delta_ms": ms([u["delta_s"] for u in up])},
        "wer_percent": {"live": live_wer, "whole_file": file_wer,
                        "live_vs_whole_file": wer([(u["text"], p["text"])
                                                   for u, p in zip(up, ptt, strict=True)])},
        "capacity": cap,
        "finals_without_a_decode": promoted,
        "targets": TARGETS, "met": met,
        "texts": {n: {"live": p["text"], "whole_file": u["text"]}
                  for n, p, u in zip(names, ptt, up, strict=True)},
    }


def _le(value: float | None, bound: float) -> bool:
    return value is not None and value <= bound


def run(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)
    result = asyncio.run(_run(args))
    result["file"] = str(write_result("live", result))
    return result

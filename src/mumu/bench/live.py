"""Live speech: push-to-talk and hands-free streams vs the upload path, WER and capacity.

Held-out clips (``benchmarks/data/live``) are played at real-time pace as live streams
and, in the same run, sent whole through the upload path, both the way the ``--driver``
goes in (``live_driver.py`` is the interface):

- ``websocket`` (the default): through a ``mumu gateway`` process, as its clients use it:
  ``/api/ws`` ``stream.start`` / PCM16 frames / ``stream.end``, and ``POST /api/ask``
  with the clip; results are read on the sockets (``live_ws.py``);
- ``nats``: the producer path, ``mumu.ingest.live`` and chunk subjects, and
  ``mumu.ingest.audio``, with a workspace producer's credentials.

Ingest, transcribe and reason (the default embedded model) run in this process on an
embedded nats-server with every user `mumu up` makes (``live_gateway.py``). Measured:

- push-to-talk: ``stream.end`` sent (with the last chunk) → ``transcript.final`` and →
  the first answer delta;
- hands-free: the clip then silence, no end: end of speech (the clip's last audible 10 ms,
  sent) → ``transcript.final``;
- word commit latency: a word's end sent → the first partial that commits it;
- WER of the live finals and of whole-file transcription of the same clips (vs the
  references, and live vs whole-file);
- upload path: upload begun → transcript final and → first answer delta;
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
from pathlib import Path
from typing import Any

from mumu.bench.live_driver import LiveDriver
from mumu.bench.live_gateway import DRIVERS, running
from mumu.bench.live_measure import (
    Arrived,
    Played,
    Recorder,
    audible_end,
    commit_latencies,
    ms,
    play,
)
from mumu.bench.live_report import Runs, result
from mumu.bench.results import write_result
from mumu.contracts.options import AudioOptions
from mumu.settings import Settings
from mumu.stages.transcribe.engine import wav_to_float

WS = "bench-live"


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
    parser.add_argument("--warm-up", action=argparse.BooleanOptionalAction, default=True,
                        help="one unmeasured stream and upload first (the first decodes and "
                        "answers are slow)")
    parser.add_argument("--driver", choices=DRIVERS, default="websocket",
                        help="the way in: a gateway's websocket and POST /api/ask, or the "
                        "NATS producer subjects")


def need(event: Arrived | None) -> Arrived:
    if event is None:  # (waited for before: cannot happen)
        raise RuntimeError("an event waited for is missing")
    return event


def silence(seconds: float) -> Any:
    import numpy as np

    rng = np.random.default_rng(1)
    return (rng.standard_normal(int(seconds * 16_000)) * 0.002).astype(np.float32)


async def push_to_talk(driver: LiveDriver, rec: Recorder, audio: Any,
                       answer: bool = True) -> dict[str, Any]:
    session = f"ptt-{uuid.uuid4().hex[:8]}"
    try:
        stream = await driver.open(session, AudioOptions(language="en", word_timestamps=True,
                                                         answer=answer))
        rid = f"{stream.request_id}-0"
        played = await play(stream, audio, end=True)
        ended = played.sent[-1]
        await rec.wait(lambda: rec.first(rid, "final") is not None
                       and (not answer or rec.first(rid, "delta") is not None
                            or rec.first(rid, "answer") is not None), 120)
    finally:
        await driver.release(session)
    final = need(rec.first(rid, "final"))
    delta = rec.first(rid, "delta")
    return {"rid": rid, "text": final.body["text"], "final_s": final.at - ended,
            "delta_s": (delta.at - ended) if delta else None,
            "commit_s": commit_latencies(rec, rid, played),
            "model_s": float(final.body.get("compute_seconds") or 0.0),
            "audio_s": played.positions[-1]}


async def hands_free(driver: LiveDriver, rec: Recorder, audio: Any,
                     silence_s: float) -> float:
    session = f"hf-{uuid.uuid4().hex[:8]}"
    try:
        stream = await driver.open(session, AudioOptions(language="en", word_timestamps=True,
                                                         answer=False))
        rid = f"{stream.request_id}-0"
        played = Played()
        await play(stream, audio, end=False, played=played)
        # the microphone stays open: silence goes on until the final comes, then the end
        stop = asyncio.Event()
        tail = asyncio.create_task(play(stream, silence(silence_s + 5.0), end=True,
                                        played=played, stop=stop))
        try:
            await rec.wait(lambda: rec.first(rid, "final") is not None, 120)
        finally:
            stop.set()
            await tail
    finally:
        await driver.release(session)
    final = need(rec.first(rid, "final"))
    return final.at - played.sent_at(audible_end(audio))


async def upload(driver: LiveDriver, rec: Recorder, data: bytes) -> dict[str, Any]:
    session = f"up-{uuid.uuid4().hex[:8]}"
    try:
        up = await driver.upload(session, data, AudioOptions(language="en"))
        rid = up.request_id
        await rec.wait(lambda: rec.first(rid, "final") is not None
                       and rec.first(rid, "delta") is not None, 120)
    finally:
        await driver.release(session)
    final, delta = need(rec.first(rid, "final")), need(rec.first(rid, "delta"))
    return {"text": final.body["text"], "final_s": final.at - up.sent,
            "delta_s": delta.at - up.sent}


async def capacity(driver: LiveDriver, rec: Recorder, clips: list[Any], args: Any
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
        async with running(Path(tmp), args, WS, rec.on_event) as stack:
            way_in, live = stack.way_in, stack.live
            if args.warm_up:  # every path once
                await push_to_talk(way_in, rec, audio[names[0]])
                await upload(way_in, rec, data[names[0]])
            ptt = [await push_to_talk(way_in, rec, audio[n]) for n in names]
            up = [await upload(way_in, rec, data[n]) for n in names]
            hf = [await hands_free(way_in, rec, audio[n], live.silence) for n in names]
            cap = await capacity(way_in, rec, [audio[n] for n in names], args)
            promoted = live.stream_stats()
            seen = await stack.counts()
    return result(args, names, refs,
                  Runs(way_in.name, ptt, up, hf, cap, live.silence, promoted, seen))


def run(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)
    result = asyncio.run(_run(args))
    result["file"] = str(write_result("live", result))
    return result

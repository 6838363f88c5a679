"""The Whisper engine: one ``WhisperModel`` per process, inference in a dedicated pool.

``Engine.transcribe`` decodes one request and hands each segment to the event loop as
soon as it is decoded (partials); blocking work never runs on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from mumu.contracts.events import Segment, Word
from mumu.contracts.options import AudioOptions
from mumu.runtime.threads import ThreadStream, Work
from mumu.stages.transcribe.model import (
    ModelError,
    Placement,
    cuda_device_count,
    resolve_model,
    select_placement,
)
from mumu.stages.transcribe.settings import TranscribeSettings
from mumu.stages.transcribe.short_context import Decoded, ShortContext
from mumu.stages.transcribe.window_batch import Window, decode_windows, group

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
OnSegment = Callable[[Segment, str], Awaitable[None]]
"""Called with each decoded segment and the request's language."""
Batched = tuple[list["Result | BaseException"], list[int]]
"""``Engine.run_windows``' answer: a result (or the error) per job, in order, and the jobs
of each model call (1 for a job decoded on its own)."""


def default_cpu_threads() -> int:
    """The cores this process may run on, at most 4 (CTranslate2's own default)."""
    return max(1, min(4, len(os.sched_getaffinity(0))))


class JobCancelledError(Exception):
    """The request was abandoned (shutdown, publish failure); stop decoding it."""


@dataclass
class Result:
    segments: list[Segment]
    language: str
    language_probability: float
    duration: float
    compute_seconds: float

    @property
    def text(self) -> str:
        return " ".join(s.text.strip() for s in self.segments if s.text.strip())


@dataclass
class Job:
    """One request's audio and options, as the batch decoder sees it."""

    audio: np.ndarray
    options: AudioOptions
    cancelled: threading.Event = field(default_factory=threading.Event)
    encoder_margin: float = 0.0
    """> 0: a window of at most 30 s decoded with the encoder on its frames plus this many
    seconds (``short_context``), not on Whisper's padded 30 s; 0: the usual decode."""


def to_segment(index: int, seg: Any) -> Segment:
    """A faster-whisper segment as the contract's ``Segment``."""
    words = None
    if seg.words:
        words = [
            Word(start=round(w.start, 3), end=round(w.end, 3), word=w.word,
                 probability=round(w.probability, 4))
            for w in seg.words
        ]
    return Segment(
        id=index, start=round(seg.start, 3), end=round(seg.end, 3), text=seg.text.strip(),
        avg_logprob=seg.avg_logprob, no_speech_prob=seg.no_speech_prob, words=words,
    )


def transcribe_kwargs(options: AudioOptions) -> dict[str, Any]:
    """The request's options as ``WhisperModel.transcribe`` arguments (the one mapping;
    ``answer`` is for the reason stage, not the model)."""
    return {
        "language": options.language,
        "task": options.task,
        "initial_prompt": options.prompt,
        "word_timestamps": options.word_timestamps,
        "vad_filter": options.vad,
        "beam_size": options.beam_size,
    }


class Engine:
    """Loads the model (``load``) and runs requests in its own thread pool."""

    def __init__(
        self, settings: TranscribeSettings, cache_dir: Path, placement: Placement | None = None,
        threads: int | None = None,
    ) -> None:
        self.settings = settings
        self.cache_dir = cache_dir
        self.placement = placement
        self.concurrency = threads or settings.num_workers + 1
        self.model: Any = None
        self.short_context: ShortContext | None = None
        """``ShortContext`` on the loaded model (decodes of jobs with an encoder margin)."""
        # more threads than model workers overlap one request's decoding and features with
        # another's inference; CTranslate2 queues the inference calls themselves
        self._pool_size = max(threads or settings.num_workers, settings.num_workers)
        self.executor = self._new_pool()
        self._closed = False
        self._calls = 0
        self._calls_lock = threading.Lock()

    def _new_pool(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(max_workers=self._pool_size, thread_name_prefix="mumu-whisper")

    def load(self) -> None:
        """Blocking: place (unless given), resolve, reassemble if needed, load the model."""
        from faster_whisper import WhisperModel

        if self.placement is None:
            self.placement = select_placement(
                self.settings.device, self.settings.compute_type, cuda_device_count()
            )
        placement = self.placement
        source = resolve_model(self.settings.model, self.cache_dir)
        started = time.perf_counter()
        try:
            self.model = WhisperModel(
                source,
                device=placement.device,
                device_index=self.settings.device_index,
                compute_type=placement.compute_type,
                cpu_threads=self.settings.cpu_threads or default_cpu_threads(),
                num_workers=self.settings.num_workers,
                download_root=str(self.cache_dir),
                local_files_only=True,
            )
            self.short_context = ShortContext(self.model)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ModelError(
                f"MUMU_TRANSCRIBE__MODEL={self.settings.model}: cannot load ({exc}); mumu never "
                "downloads at run time: point it at a CTranslate2 directory, use `base` (the "
                f"bundled model) or put the model into {self.cache_dir} first (a Hugging Face "
                "cache layout: models--Systran--faster-whisper-<name>)"
            ) from exc
        log.info(
            "model %s loaded from %s on %s/%s in %.2f s", self.settings.model, source,
            placement.device, placement.compute_type, time.perf_counter() - started,
            extra={"stage": "transcribe"},
        )

    @property
    def device(self) -> str:
        """Where the model runs (``cpu``, ``cuda``); known once it is placed."""
        return self.placement.device if self.placement is not None else self.settings.device

    @property
    def model_calls(self) -> int:
        """Decodes that reached the model: one a request, one a batch of windows."""
        return self._calls

    def _called(self) -> None:
        with self._calls_lock:  # from the pool's threads
            self._calls += 1

    @property
    def languages(self) -> frozenset[str]:
        """ISO 639-1 codes the loaded model knows (``en`` only for English-only models)."""
        return frozenset(self.model.supported_languages) if self.model is not None else frozenset()

    async def start(self) -> None:
        """Load the model in the pool; on failure the pool is closed again. A stopped
        engine starts again with a new pool (the stage restarts after a reconnect)."""
        if self._closed:
            self.executor = self._new_pool()
            self._closed = False
        try:
            await asyncio.get_running_loop().run_in_executor(self.executor, self.load)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Close the pool (waits for its threads, so off the event loop)."""
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
        self._closed = True
        self.model = None

    def run_one(
        self, job: Job, deliver: Callable[[tuple[Segment, str]], None], stop: threading.Event,
    ) -> Result:
        """Blocking: decode one request, calling ``deliver`` per segment as it is decoded."""
        started = time.perf_counter()
        self._called()
        if job.encoder_margin > 0 and self.short_context is not None:
            short = self.short_context.decode(job.audio, job.options, job.encoder_margin)
            if short is not None:
                for segment in short.segments:
                    deliver((segment, short.language))
                return _short_result(short, job, time.perf_counter() - started)
        segments, info = self.model.transcribe(job.audio, **transcribe_kwargs(job.options))
        out: list[Segment] = []
        for seg in segments:
            if stop.is_set():
                raise JobCancelledError
            segment = to_segment(len(out), seg)
            out.append(segment)
            deliver((segment, info.language))
        return Result(
            segments=out, language=info.language,
            language_probability=round(float(info.language_probability), 4),
            duration=round(float(info.duration), 3),
            compute_seconds=round(time.perf_counter() - started, 3),
        )

    async def transcribe(self, job: Job, on_segment: OnSegment) -> Result:
        """Decode ``job`` in the pool; ``on_segment`` runs on the loop for each segment."""
        work: Work[tuple[Segment, str], Result] = partial(self.run_one, job)
        async with ThreadStream(self.executor, work, stop=job.cancelled) as segments:
            async for segment, language in segments:
                await on_segment(segment, language)
            return await segments.result()

    def run_windows(self, jobs: list[Job]) -> Batched:
        """Blocking: decode short-context windows (live decodes), those that can share a
        batch (``window_batch.group``) in one model call a batch, the others one by one."""
        windows = [Window(j.audio, j.options, j.encoder_margin) for j in jobs]
        batches, alone = group(self.model, windows)
        results: list[Result | BaseException] = [RuntimeError("not decoded")] * len(jobs)
        sizes: list[int] = []
        for members in batches.values():
            started = time.perf_counter()
            self._called()
            try:
                decoded = decode_windows(self.model, [windows[i] for i in members])
                spent = (time.perf_counter() - started) / len(members)
                for i, one in zip(members, decoded, strict=True):
                    results[i] = _short_result(one, jobs[i], spent)
            except Exception as exc:  # noqa: BLE001 - every job of the batch gets the error
                for i in members:
                    results[i] = exc
            sizes.append(len(members))
        for i in alone:
            try:
                results[i] = self.run_one(jobs[i], lambda _: None, jobs[i].cancelled)
            except Exception as exc:  # noqa: BLE001 - that job's error, not the others'
                results[i] = exc
            sizes.append(1)
        return results, sizes

    async def transcribe_windows(self, jobs: list[Job]) -> Batched:
        """``run_windows`` in the pool."""
        return await asyncio.get_running_loop().run_in_executor(
            self.executor, self.run_windows, jobs)


def _short_result(short: Decoded, job: Job, seconds: float) -> Result:
    return Result(
        segments=short.segments, language=short.language,
        language_probability=short.language_probability,
        duration=round(job.audio.size / SAMPLE_RATE, 3), compute_seconds=round(seconds, 3),
    )


def wav_to_float(data: bytes) -> np.ndarray:
    """16 kHz mono 16-bit WAV (as ingest stores it) → float32 in [-1, 1]."""
    import io
    import wave

    with wave.open(io.BytesIO(data), "rb") as w:
        if w.getframerate() != SAMPLE_RATE or w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise ValueError(
                f"expected 16 kHz mono 16-bit WAV, got {w.getframerate()} Hz, "
                f"{w.getnchannels()} ch, {8 * w.getsampwidth()}-bit"
            )
        frames = w.readframes(w.getnframes())
    return np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0

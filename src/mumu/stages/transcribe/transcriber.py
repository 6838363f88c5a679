"""The one interface the transcribe stage calls: ``Engine`` (one request per model call)
and ``MicroBatcher`` (requests of a short window decoded together) both implement it, and
``build_transcriber`` picks one from the settings, so the stage has no branch between them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from mumu.stages.transcribe.batcher import MicroBatcher
from mumu.stages.transcribe.engine import Batched, Engine, Job, OnSegment, Result
from mumu.stages.transcribe.settings import TranscribeSettings


class Transcriber(Protocol):
    @property
    def languages(self) -> frozenset[str]:
        """ISO 639-1 codes the loaded model knows."""
        ...

    @property
    def concurrency(self) -> int:
        """Requests worth having in flight at once (the stage's route concurrency)."""
        ...

    @property
    def device(self) -> str:
        """Where the model runs (``cpu``, ``cuda``), once started."""
        ...

    async def start(self) -> None:
        """Load the model (before the stage reports ready)."""
        ...

    async def stop(self) -> None: ...

    async def transcribe(self, job: Job, on_segment: OnSegment) -> Result:
        """Decode ``job``; ``on_segment`` gets each segment (at once, or when its batch is
        done)."""
        ...

    async def transcribe_windows(self, jobs: list[Job]) -> Batched:
        """Decode short-context windows (live decodes of several streams), those that can
        share a batch in one model call (``Engine.run_windows``)."""
        ...


def build_transcriber(
    settings: TranscribeSettings, data_dir: Path, on_batch: Callable[[int], None] | None = None
) -> Transcriber:
    """The engine, behind a micro-batcher when ``batch_window_ms`` > 0; ``on_batch`` hears
    the size of each micro-batch run."""
    s = settings
    batching = s.batch_window_ms > 0
    inflight = s.max_inflight or (s.max_batch * s.num_workers if batching else s.num_workers + 1)
    engine = Engine(s, s.model_cache_dir or data_dir / "models", threads=inflight)
    if not batching:
        return engine
    return MicroBatcher(engine, s.batch_window_ms, s.max_batch, s.batch_size,
                        concurrency=inflight, on_batch=on_batch)

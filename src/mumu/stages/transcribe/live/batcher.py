"""Live decodes of several streams gathered into one model call.

Each live stream has at most one decode in flight (its steps are sequential), so a replica
serving N streams has up to N decodes waiting at any moment. ``LiveBatcher`` takes them
from the streams' ``LiveDecoder``s: the first one waits ``window`` seconds for others (at
most ``max_batch``), then all go to the transcriber's ``transcribe_windows`` together: one
encoder pass, one ``generate`` and one ``align`` for the batch (``window_batch.py``). While
``workers`` batches are in the model, new decodes queue and the next batch takes them at
once, so under load the batches fill without waiting for the window.

On by default where it pays (``batching``: the model on CUDA); on CPU a batch of N costs
about N decodes, so it is off there unless asked for (docs/audio.md, "Live decodes on a
GPU"). The gathering loop is ``gather.Gatherer``, shared with the file batcher.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, Protocol

from mumu.stages.transcribe.engine import Batched, Job
from mumu.stages.transcribe.gather import Gatherer


class Windows(Protocol):
    async def transcribe_windows(self, jobs: list[Job]) -> Batched: ...


def batching(setting: Literal["auto", "on", "off"], device: str) -> bool:
    """Whether live decodes are batched: ``auto`` is on when the model runs on CUDA."""
    return setting == "on" or (setting == "auto" and device == "cuda")


class LiveBatcher(Gatherer):
    """``transcribe`` for ``LiveDecoder``: a decode waits for its batch's result."""

    def __init__(self, transcriber: Windows, window_ms: float, max_batch: int, *,
                 workers: int = 1, on_batch: Callable[[int], None] | None = None) -> None:
        super().__init__(transcriber.transcribe_windows, window_ms, max_batch,
                         workers=workers, name="mumu-live-batch", on_batch=on_batch)

"""The live stream's two collaborators on the transcribe stage's own parts: words from the
stage's ``Transcriber`` (or the route's ``LiveBatcher`` in front of it, so live steps of
several streams go to the model as one batch), speech from the VAD in the stage's thread
pool."""

from __future__ import annotations

import asyncio
from typing import Protocol

import numpy as np

from mumu.contracts.options import AudioOptions
from mumu.stages.transcribe.engine import Job, OnSegment, Result
from mumu.stages.transcribe.live.agreement import TimedWord
from mumu.stages.transcribe.live.endpoint import Speech, Vad
from mumu.stages.transcribe.live.settings import ENCODER_MARGIN


class Decodes(Protocol):
    """The stage's ``Transcriber``, or a ``LiveBatcher`` in front of it."""

    async def transcribe(self, job: Job, on_segment: OnSegment) -> Result: ...


class LiveDecoder:
    """``decode`` and ``detect`` for ``LiveStream`` with one stream's ``options``."""

    def __init__(self, transcriber: Decodes, vad: Vad, options: AudioOptions,
                 encoder_margin: float = ENCODER_MARGIN) -> None:
        self.transcriber = transcriber
        self.encoder_margin = encoder_margin
        """> 0: the encoder sees the window plus this many seconds, not a padded 30 s."""
        self.vad = vad
        self.options = options.model_copy(update={"word_timestamps": True, "vad": False})
        self.language: str | None = options.language
        """The language of the last decode (the one asked for, or the one detected)."""
        self._compute = 0.0

    async def decode(self, audio: np.ndarray, prompt: str | None) -> list[TimedWord]:
        options = self.options
        if prompt:
            joined = f"{options.prompt} {prompt}" if options.prompt else prompt
            options = options.model_copy(update={"prompt": joined[-800:]})

        async def ignore(*_: object) -> None:
            return None

        result = await self.transcriber.transcribe(Job(
            audio=audio, options=options, encoder_margin=self.encoder_margin), ignore)
        self.language = result.language
        if self.options.language is None:  # detected once, kept for the whole stream
            self.options = self.options.model_copy(update={"language": result.language})
        self._compute += result.compute_seconds
        return [
            TimedWord(w.word, w.start, w.end, w.probability)
            for segment in result.segments for w in segment.words or []
        ]

    def take_compute_seconds(self) -> float:
        """Model seconds spent since the last call (one utterance's, at its final)."""
        spent, self._compute = self._compute, 0.0
        return spent

    async def detect(self, audio: np.ndarray) -> Speech:
        return await asyncio.to_thread(self.vad.speech, audio)

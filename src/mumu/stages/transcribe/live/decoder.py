"""The live stream's two collaborators on the transcribe stage's own parts: words from the
stage's ``Transcriber`` (the engine or the micro-batcher, so live steps of several streams
batch together on a GPU), speech from the VAD in the stage's thread pool."""

from __future__ import annotations

import asyncio

import numpy as np

from mumu.contracts.options import AudioOptions
from mumu.stages.transcribe.engine import Job
from mumu.stages.transcribe.live.agreement import TimedWord
from mumu.stages.transcribe.live.endpoint import Speech, Vad
from mumu.stages.transcribe.transcriber import Transcriber


class LiveDecoder:
    """``decode`` and ``detect`` for ``LiveStream`` with one stream's ``options``."""

    def __init__(self, transcriber: Transcriber, vad: Vad, options: AudioOptions) -> None:
        self.transcriber = transcriber
        self.vad = vad
        self.options = options.model_copy(update={"word_timestamps": True, "vad": False})

    async def decode(self, audio: np.ndarray, prompt: str | None) -> list[TimedWord]:
        options = self.options
        if prompt:
            joined = f"{options.prompt} {prompt}" if options.prompt else prompt
            options = options.model_copy(update={"prompt": joined[-800:]})

        async def ignore(*_: object) -> None:
            return None

        result = await self.transcriber.transcribe(Job(audio=audio, options=options), ignore)
        return [
            TimedWord(w.word, w.start, w.end)
            for segment in result.segments for w in segment.words or []
        ]

    async def detect(self, audio: np.ndarray) -> Speech:
        return await asyncio.to_thread(self.vad.speech, audio)

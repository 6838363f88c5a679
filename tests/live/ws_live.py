"""Helpers of the live websocket and Realtime tests: clips, a paced sender, a reader that
keeps every message with the time it arrived."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from mumu.settings import Settings
from mumu.stages.transcribe.engine import wav_to_float
from tests.text import words as words  # re-exported: test_ws_stream imports it from here

SPEECH = Path(__file__).parents[1] / "data" / "speech"
RATE = 16_000


def noise(seconds: float, seed: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(seconds * RATE)) * 0.002).astype(np.float32)


def clip(name: str) -> np.ndarray:
    return wav_to_float((SPEECH / name).read_bytes())


def two_utterances() -> np.ndarray:
    """en01, a pause of 1.5 s, en02, and a little silence after."""
    return np.concatenate([noise(0.5), clip("en01.wav"), noise(1.5, 6), clip("en02.wav"),
                           noise(1.0, 7)])


def pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def live_settings(settings: Settings, **gateway: Any) -> Settings:
    """Small answers (the reason stage's cost), and the gateway's ``gateway`` overrides."""
    reason = settings.reason.model_copy(update={"max_tokens": 24})
    return settings.model_copy(update={
        "reason": reason, "gateway": settings.gateway.model_copy(update=gateway)})


@dataclass
class Reader:
    """Reads a socket in the background: each JSON message with its arrival time."""

    ws: aiohttp.ClientWebSocketResponse
    got: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    _new: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Reader:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.got.append((time.monotonic(), json.loads(msg.data)))
                self._new.set()

    @property
    def messages(self) -> list[dict[str, Any]]:
        return [m for _, m in self.got]

    async def wait(self, done: Any, timeout: float = 60.0) -> list[dict[str, Any]]:
        """Until ``done(messages)`` is true."""
        deadline = time.monotonic() + timeout
        while not done(self.messages):
            self._new.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"waited {timeout} s; got {self.messages[-8:]}")
            await asyncio.wait_for(self._new.wait(), left)
        return self.messages

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == kind]


async def send_paced(ws: aiohttp.ClientWebSocketResponse, audio: bytes, *,
                     chunk_seconds: float = 0.25, pace: float = 1.0) -> None:
    """``audio`` (PCM16 16 kHz) in chunks at ``pace`` x real time."""
    step = int(chunk_seconds * RATE) * 2
    for start in range(0, len(audio), step):
        await ws.send_bytes(audio[start:start + step])
        await asyncio.sleep(chunk_seconds / pace)

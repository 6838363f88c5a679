"""Barge-in on real servers, the real Whisper model and the real llama.cpp answer model:
the user speaks again while the answer to their previous utterance streams; with
``barge_in`` on (the default) that answer stops (its final says ``cancelled``) and the new
utterance is answered; with it off both are answered in full."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from nats.aio.client import Client as NATS

from mumu.bench.live_driver import NatsLiveDriver
from mumu.contracts import subjects
from mumu.contracts.events import CancelRequest, new_id
from mumu.contracts.options import AudioOptions
from mumu.settings import Settings
from mumu.stages.reason.settings import LlamaCppBackendSettings, ReasonSettings
from mumu.stages.reason.stage import build_stage as build_reason
from mumu.stages.transcribe.engine import wav_to_float
from mumu.stages.transcribe.live.endpoint import SAMPLE_RATE
from mumu.stages.transcribe.live.settings import LiveSettings
from mumu.stages.transcribe.settings import TranscribeSettings
from mumu.stages.transcribe.stage import build_stage as build_transcribe
from tests.conftest import Ensure
from tests.harness import running
from tests.live.test_live_nats import SPEECH, WS, as_pcm16

pytestmark = [pytest.mark.slow, pytest.mark.timeout(480)]

CHUNK = int(0.25 * SAMPLE_RATE)
MAX_TOKENS = 200
LONG_ANSWERS = ("Whatever the user says, answer with a very long and detailed story of at "
                "least 400 words about it.")


def with_silence(name: str, after: float) -> np.ndarray:
    rng = np.random.default_rng(11)
    quiet = (rng.standard_normal(int(after * SAMPLE_RATE)) * 0.002).astype(np.float32)
    return np.concatenate([quiet[:int(0.4 * SAMPLE_RATE)],
                           wav_to_float((SPEECH / name).read_bytes()), quiet])


async def play(stream: Any, audio: np.ndarray, *, last: bool, pace: float = 4.0) -> None:
    chunks = [audio[i:i + CHUNK] for i in range(0, audio.size, CHUNK)]
    for n, chunk in enumerate(chunks):
        if last and n == len(chunks) - 1:
            await stream.end(as_pcm16(chunk))
        else:
            await stream.send(as_pcm16(chunk))
        await asyncio.sleep(0.25 / pace)


@pytest.mark.parametrize("barge_in", [True, False])
async def test_speaking_again_cancels_the_streaming_answer_unless_barge_in_is_off(
    barge_in: bool, nc: NATS, streams: None, workspaces: Ensure, settings: Settings,
    tmp_path: Path,
) -> None:
    await workspaces(WS)
    # the default embedded model: one answer at a time, the next ask waits for it (an HTTP
    # llama.cpp server with its stock interrupt_requests would cut the first answer short
    # when the second ask arrives, which is not what barge-in off is to show)
    reason = ReasonSettings(llama_cpp=LlamaCppBackendSettings(n_threads=1),
                            max_tokens=MAX_TOKENS, temperature=0.0, context_tokens=2048,
                            system_prompt=LONG_ANSWERS)
    cfg = settings.model_copy(update={"reason": reason, "transcribe": TranscribeSettings(
        model_cache_dir=tmp_path.parent / "models", cpu_threads=2,
        live=LiveSettings(barge_in=barge_in))})
    events: list[tuple[str, dict[str, Any], float]] = []
    changed = asyncio.Event()

    def on_event(kind: str, body: dict[str, Any], at: float) -> None:
        events.append((kind, body, at))
        changed.set()

    async def until(check: Any, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not check():
                changed.clear()
                await changed.wait()

    driver = NatsLiveDriver(nc, WS, on_event)
    await driver.start()
    async with running(build_transcribe(cfg), cfg), running(build_reason(cfg), cfg):
        stream = await driver.open("s-barge", AudioOptions(language="en"))
        first, second = f"{stream.request_id}-0", f"{stream.request_id}-1"

        def of(kind: str, rid: str) -> list[dict[str, Any]]:
            return [b for k, b, _ in events if k == kind and b["request_id"] == rid]

        await play(stream, with_silence("en01.wav", 1.0), last=False)
        await until(lambda: of("delta", first), 120)  # the first answer is streaming
        await play(stream, with_silence("en02.wav", 1.2), last=True)
        # the second question is answered; by then a barge-in had long been heard
        await until(lambda: of("answer", first) and of("delta", second), 180)
        await cancel(nc, second)  # (ends the test sooner: the second answer is not needed)
        await until(lambda: of("answer", second), 120)
    await driver.close()
    answered = of("answer", first)[0]
    assert "quarterly report" in of("final", second)[0]["text"].lower()
    assert answered["cancelled"] is barge_in
    # every live partial has words: the first event of the second utterance is its words
    words_at = next(at for k, b, at in events
                    if k in ("partial", "final") and b["request_id"] == second)
    answer_at = next(at for k, b, at in events if k == "answer" and b["request_id"] == first)
    if barge_in:  # it stopped short, at the second utterance's first words
        assert answered["usage"]["completion_tokens"] < MAX_TOKENS
        assert 0 < answer_at - words_at < 3.0
    else:  # it was still streaming when the user spoke again, and went on to its end
        assert answer_at > words_at


async def cancel(nc: NATS, request_id: str) -> None:
    event = CancelRequest(event_id=new_id(), request_id=request_id, workspace_id=WS,
                          session_id="s-barge")
    await nc.publish(subjects.CONTROL_CANCEL.for_workspace(WS), event.model_dump_json().encode())

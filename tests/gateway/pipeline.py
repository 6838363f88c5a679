"""The real stages (ingest, transcribe, reason) in this event loop, for end-to-end tests."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from mumu.settings import Settings
from mumu.stages.ingest.stage import build_stage as build_ingest
from mumu.stages.reason.settings import LlamaCppBackendSettings, ReasonSettings
from mumu.stages.reason.stage import build_stage as build_reason
from mumu.stages.transcribe.settings import TranscribeSettings
from mumu.stages.transcribe.stage import build_stage as build_transcribe
from tests.harness import Collector, running

SPEECH = Path(__file__).resolve().parents[1] / "data" / "speech"


def pipeline_settings(settings: Settings, model_cache: Path) -> Settings:
    return settings.model_copy(update={
        "transcribe": TranscribeSettings(model_cache_dir=model_cache, cpu_threads=2),
        "reason": ReasonSettings(
            llama_cpp=LlamaCppBackendSettings(n_threads=1), max_tokens=120, temperature=0.0,
            context_tokens=2048,
        ),
        "stage": settings.stage.model_copy(update={"ack_wait": 20.0}),
    })


@contextlib.asynccontextmanager
async def stages(settings: Settings, *, reason: bool = True) -> AsyncIterator[None]:
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(running(build_ingest(settings), settings))
        await stack.enter_async_context(running(build_transcribe(settings), settings))
        if reason:
            await stack.enter_async_context(running(build_reason(settings), settings))
        yield


def assert_answer_is_the_stages(seen: Collector, body: dict[str, Any]) -> None:
    """The answer a caller got over HTTP is the reason stage's one ``answer.final`` for
    the request, and the deltas it streamed add up to it."""
    rid = body["request_id"]
    finals = [json.loads(m.data) for m in seen.on("mumu.answer.final.")
              if json.loads(m.data)["request_id"] == rid]
    deltas = [json.loads(m.data) for m in seen.on("mumu.answer.delta.")
              if json.loads(m.data)["request_id"] == rid]
    assert [f["text"] for f in finals] == [body["answer"]]
    assert "".join(d["text"] for d in sorted(deltas, key=lambda d: d["index"])) == body["answer"]

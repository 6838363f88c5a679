"""The pipeline `mumu bench live` measures: ingest, transcribe and reason (the default
embedded model) in this process, on the benchmark's nats-server (``live_gateway``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mumu.quota.settings import QuotaSettings
from mumu.runtime.metrics import StageMetrics
from mumu.runtime.process import run_stage
from mumu.settings import NatsSettings, Settings, StageRuntimeSettings
from mumu.stages.ingest.stage import build_stage as build_ingest
from mumu.stages.reason.settings import ReasonSettings
from mumu.stages.reason.stage import build_stage as build_reason
from mumu.stages.transcribe.settings import TranscribeSettings
from mumu.stages.transcribe.stage import build_stage as build_transcribe


@dataclass
class Live:
    settings: Settings
    metrics: StageMetrics

    @property
    def silence(self) -> float:
        return self.settings.transcribe.live.silence

    def stream_stats(self) -> dict[str, float]:
        """Finals of live utterances by how they were made (read from the stage's
        metrics): ``promoted`` took the newest hypothesis without another decode."""
        out: dict[str, float] = {}
        for how in ("promoted", "decoded"):
            value = self.metrics.registry.get_sample_value(
                "mumu_live_finals_total", {"stage": "transcribe", "how": how})
            out[how] = value or 0.0
        return out


def bench_settings(nats: NatsSettings, tmp: Path, args: argparse.Namespace) -> Settings:
    return Settings(
        data_dir=tmp / "mumu", log_level="WARNING", nats=nats,
        stage=StageRuntimeSettings(fetch_timeout=1.0),
        transcribe=TranscribeSettings(model=args.model, model_cache_dir=tmp / "models",
                                      cpu_threads=args.cpu_threads),
        reason=ReasonSettings(max_tokens=args.max_tokens),
        # the capacity streams are not answered and the gateway runs without quotas too:
        # this measures speech, not admission
        quota=QuotaSettings(enabled=False),
    )


@contextlib.asynccontextmanager
async def pipeline(nats: NatsSettings, tmp: Path, args: argparse.Namespace
                   ) -> AsyncIterator[Live]:
    """The stages, each connected as its own broker role (``nats.credentials``)."""
    settings = bench_settings(nats, tmp, args)
    metrics = StageMetrics("transcribe")
    stop = asyncio.Event()
    stages: list[tuple[Any, StageMetrics | None]] = [
        (build_ingest(settings), None), (build_transcribe(settings), metrics),
        (build_reason(settings), None)]
    started = [asyncio.Event() for _ in stages]
    async with asyncio.TaskGroup() as tg:
        for (stage, m), event in zip(stages, started, strict=True):
            tg.create_task(run_stage(stage, settings, stop, started=event, metrics=m))
        for event in started:
            await event.wait()
        try:
            yield Live(settings, metrics)
        finally:
            stop.set()

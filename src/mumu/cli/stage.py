"""``mumu stage <name>``: run one stage process."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util

from mumu.runtime.process import install_signal_handlers, run_stage
from mumu.runtime.stage import Stage
from mumu.settings import Settings

STAGE_NAMES = ("ingest", "transcribe", "reason", "persist")


def available_stages() -> list[str]:
    """Stages whose package provides ``stage.build_stage`` in this installation."""
    return [n for n in STAGE_NAMES if importlib.util.find_spec(f"mumu.stages.{n}.stage")]


def build_stage(name: str, settings: Settings) -> Stage:
    module = importlib.import_module(f"mumu.stages.{name}.stage")
    stage: Stage = module.build_stage(settings)
    return stage


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("stage", help="run one pipeline stage")
    p.add_argument("name", choices=STAGE_NAMES)
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.name not in available_stages():
        raise RuntimeError(f"the {args.name} stage is not part of this build yet")
    stage = build_stage(args.name, settings)

    async def main() -> None:
        stop = asyncio.Event()
        install_signal_handlers(stop)
        await run_stage(stage, settings, stop)

    asyncio.run(main())
    return 0

"""``mumu stage <name>``: run one stage process (the stages are those of the registry)."""

from __future__ import annotations

import argparse
import asyncio

from mumu.runtime.process import install_signal_handlers, run_stage
from mumu.settings import Settings
from mumu.stages.registry import STAGES


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("stage", help="run one pipeline stage")
    p.add_argument("name", choices=STAGES.names())
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    spec = STAGES.spec(args.name)
    if not spec.available:
        raise RuntimeError(f"the {args.name} stage is not part of this build")
    stage = spec.build(settings)

    async def main() -> None:
        stop = asyncio.Event()
        install_signal_handlers(stop)
        await run_stage(stage, settings, stop)

    asyncio.run(main())
    return 0

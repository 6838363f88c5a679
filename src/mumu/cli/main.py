"""``mumu``: one entry point; each command group lives in its own module.

A command module has ``register(subparsers)``, which adds its parser and sets
``func(args, settings) -> int``. Settings are built once here and passed down.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from mumu import __version__
from mumu.logs import configure_logging
from mumu.settings import Settings

COMMAND_MODULES = (
    "mumu.cli.up",
    "mumu.cli.gateway",
    "mumu.cli.stage",
    "mumu.cli.streams",
    "mumu.cli.exporter",
    "mumu.cli.schemas",
    "mumu.cli.config",
    "mumu.cli.dlq",
    "mumu.cli.replay",
    "mumu.cli.bench",
    "mumu.cli.migrate",
    "mumu.cli.workspace",
    "mumu.cli.keys",
    "mumu.cli.auth",
    "mumu.cli.ask",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mumu", description="mumu: voice questions in, transcripts and answers out."
    )
    parser.add_argument("--version", action="version", version=f"mumu {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"mumu: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    try:
        result: int = args.func(args, settings)
    except KeyboardInterrupt:
        return 130
    except RuntimeError as exc:  # start-up errors are meant for the operator, not a traceback
        print(f"mumu {args.command}: {exc}", file=sys.stderr)
        return 1
    return result

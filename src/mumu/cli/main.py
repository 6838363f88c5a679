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

COMMANDS = ("up", "gateway", "stage", "streams", "exporter", "schemas", "config", "dlq",
            "replay", "bench", "migrate", "workspace", "keys", "auth", "ask")
"""Every command; ``mumu.cli.<command>`` registers it."""


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser of the command ``argv`` names, or of every command (``--help``, a typo).

    Only the named command's module is imported: a stage process does not pay for the
    gateway's, the benchmarks' and `mumu up`'s imports (`mumu up` starts six such
    processes at once; on two cores their imports were most of its start-up).
    """
    parser = argparse.ArgumentParser(
        prog="mumu", description="mumu: voice questions in, transcripts and answers out."
    )
    parser.add_argument("--version", action="version", version=f"mumu {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    named = [argv[0]] if argv and argv[0] in COMMANDS else COMMANDS
    for name in named:
        importlib.import_module(f"mumu.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    parser = build_parser(argv)
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

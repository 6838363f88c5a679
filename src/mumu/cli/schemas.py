"""``mumu schemas export|check``: JSON Schema + AsyncAPI 3 generated from the event models."""

from __future__ import annotations

import argparse
from pathlib import Path

from mumu.contracts.schemas import export, schema_drift
from mumu.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("schemas", help="export or check the event schemas")
    verbs = p.add_subparsers(dest="verb", required=True)
    for verb, helptext in (("export", "write schemas/*.json and schemas/asyncapi.json"),
                           ("check", "exit 1 when schemas/ differs from the models")):
        v = verbs.add_parser(verb, help=helptext)
        v.add_argument("--dir", type=Path, default=Path("schemas"))
        v.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.verb == "export":
        for path in export(args.dir):
            print(path)
        return 0
    problems = schema_drift(args.dir)
    for problem in problems:
        print(problem)
    return 1 if problems else 0

"""``mumu bench <name>``: benchmarks that compare mumu with a raw baseline in the same run.

A benchmark is a module ``mumu.bench.<name>`` with ``add_arguments(parser)`` and
``run(args, settings) -> dict`` (the results, also written to ``benchmarks/results/``).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
from pathlib import Path

from mumu.bench import reliability
from mumu.bench.report import table, with_table
from mumu.settings import Settings

BENCHMARKS = ("runtime", "transcribe", "reason", "persist", "gateway", "replay", "live")


def available() -> list[str]:
    return [n for n in BENCHMARKS if importlib.util.find_spec(f"mumu.bench.{n}")]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("bench", help="run a benchmark against its raw baseline")
    names = p.add_subparsers(dest="bench", required=True, metavar="BENCH")
    report = names.add_parser("report", help="the README's table from benchmarks/results/")
    report.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    report.add_argument("--readme", type=Path, help="rewrite the table inside this README")
    report.add_argument("--reliability", type=Path,
                        help="rewrite the chaos table (chaos-*.json) inside this document")
    report.set_defaults(func=run_report)
    for name in BENCHMARKS:
        if name not in available():
            continue
        module = importlib.import_module(f"mumu.bench.{name}")
        bp = names.add_parser(name, help=(module.__doc__ or name).strip().splitlines()[0])
        module.add_arguments(bp)
        bp.set_defaults(func=run, bench_module=module)


def run_report(args: argparse.Namespace, settings: Settings) -> int:
    if args.reliability:
        args.reliability.write_text(
            reliability.with_table(args.reliability.read_text(), args.results))
    if args.readme:
        args.readme.write_text(with_table(args.readme.read_text(), args.results))
    elif not args.reliability:
        print(table(args.results), end="")
    return 0


def run(args: argparse.Namespace, settings: Settings) -> int:
    result = args.bench_module.run(args, settings)
    print(json.dumps(result, indent=2))
    return 0

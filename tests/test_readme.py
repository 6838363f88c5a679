"""The README tells the truth: settings table and CI commands come from the code."""

from __future__ import annotations

import re
from pathlib import Path

from mumu.cli.config import with_settings_table

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()


def block(marker: str) -> str:
    found = re.search(rf"<!-- {marker} -->\n```sh\n(.*?)\n```\n<!-- /{marker} -->", README, re.S)
    assert found, f"README has no {marker} block"
    return found.group(1)


def test_settings_table_matches_the_settings() -> None:
    assert with_settings_table(README) == README, "run `mumu config docs --readme README.md`"


def test_exactly_two_setup_commands_one_runs_mumu_up_one_runs_the_tests() -> None:
    assert block("run-command").endswith("&& mumu up")
    assert block("test-command").endswith("&& pytest")
    for command in (block("run-command"), block("test-command")):
        assert 'CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"' in command


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert "test-command" in ci  # .ci/run extracts and runs the README's block verbatim


def test_benchmark_table_quotes_the_result_files() -> None:
    from mumu.bench.report import with_table

    assert with_table(README, ROOT / "benchmarks" / "results") == README, (
        "run `mumu bench report --readme README.md`"
    )

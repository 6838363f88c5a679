"""The README tells the truth: settings table and CI commands come from the code."""

from __future__ import annotations

import re
import subprocess
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


def setup_section() -> str:
    found = re.search(r"^## Set up\n(.*?)^## ", README, re.S | re.M)
    assert found, "README has no Set up section"
    return found.group(1)


def test_exactly_two_setup_commands_one_runs_mumu_up_one_runs_the_tests() -> None:
    shell_blocks = re.findall(r"```sh\n(.*?)\n```", setup_section(), re.S)
    installing = [b for b in shell_blocks if re.search(r"pip install|venv|apt|brew|docker", b)]
    # exactly two things to set up, each one command line: the run and the test command
    assert installing == [block("run-command"), block("test-command")]
    assert all("\n" not in command for command in installing)
    assert block("run-command").endswith("&& mumu up")
    assert block("test-command").endswith("&& pytest")
    for command in installing:
        assert 'CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"' in command


def test_ci_runs_the_readme_test_command() -> None:
    ci = ROOT / ".ci" / "run"
    done = subprocess.run(["bash", str(ci), "--print-test-command"], capture_output=True,
                          text=True, check=True, timeout=30)
    assert done.stdout.rstrip("\n") == block("test-command"), "extracted exactly, verbatim"
    # ...and that very string is what CI executes (before the linters)
    lines = ci.read_text().splitlines()
    runs = [i for i, line in enumerate(lines) if line.strip() == 'bash -euo pipefail -c "$test_command"']
    assert len(runs) == 1
    assert runs[0] < next(i for i, line in enumerate(lines) if line.strip() == "ruff check src tests")


def test_benchmark_table_quotes_the_result_files() -> None:
    from mumu.bench.report import with_table

    assert with_table(README, ROOT / "benchmarks" / "results") == README, (
        "run `mumu bench report --readme README.md`"
    )

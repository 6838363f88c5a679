"""`.ci/run` runs the `alone` tests by file (it does not collect the whole suite again):
every file holding one must be named there, or its tests would run nowhere."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[1]


def named_in_ci() -> set[Path]:
    script = (ROOT / ".ci" / "run").read_text()
    paths: set[Path] = set()
    for value in re.findall(r'^alone_\w+="([^"]*)"', script, re.M):
        paths |= {ROOT / p for p in value.split()}
    return paths


def test_every_file_with_an_alone_test_is_run_by_ci() -> None:
    named = named_in_ci()
    assert named, ".ci/run names no files for its alone steps"
    marker = re.compile(r"^[^#\n]*\bpytest\.mark\.alone\b(?!\")", re.M)
    holding = {p for p in (ROOT / "tests").rglob("test_*.py") if marker.search(p.read_text())}
    assert holding, "no alone test found: the search is wrong"
    missed = [p for p in holding if not any(p == n or n in p.parents for n in named)]
    assert missed == []
    assert all(p.exists() for p in named), "a path named in .ci/run is gone"

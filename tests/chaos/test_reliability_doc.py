"""docs/reliability.md's chaos table is the one the result files give."""

from __future__ import annotations

import json
from pathlib import Path

from mumu.bench.reliability import MARKERS, files, table, with_table
from tests.chaos.scenarios import results_lock

ROOT = Path(__file__).parents[2]
RESULTS = ROOT / "benchmarks" / "results"
DOC = ROOT / "docs" / "reliability.md"


def test_the_reliability_table_quotes_the_chaos_result_files() -> None:
    with results_lock():
        document = DOC.read_text()
        regenerated = with_table(document, RESULTS)
    assert regenerated == document, (
        "run `mumu bench report --reliability docs/reliability.md`")


def test_every_chaos_file_has_its_row_with_its_counts() -> None:
    with results_lock():
        rendered = table(RESULTS)
        found = files(RESULTS)
        records = {path: json.loads(path.read_text()) for path in found}
    assert found, "no chaos-*.json: run the chaos suite (pytest -m chaos)"
    for path, record in records.items():
        line = next(row for row in rendered.splitlines() if path.name in row)
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        assert cells[0] == record["scenario"]
        assert cells[3:6] == [str(record["lost"]), str(record["duplicated"]),
                              str(record["dead_lettered"])]


def test_a_changed_count_makes_the_document_stale(tmp_path: Path) -> None:
    with results_lock():
        for path in files(RESULTS):
            (tmp_path / path.name).write_text(path.read_text())
        document = DOC.read_text()
    first = files(tmp_path)[0]
    record = json.loads(first.read_text())
    record["lost"] += 1
    first.write_text(json.dumps(record))
    assert MARKERS[0] in document
    assert with_table(document, tmp_path) != document

"""How many attacks each security module tried, how many were refused and how many
returned another workspace's data: counted as the attacks run, written to
``benchmarks/results/security.json`` (``MUMU_BENCH_RESULTS`` moves it)."""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).parents[2]


def results_file() -> Path:
    folder = Path(os.environ.get("MUMU_BENCH_RESULTS", ROOT / "benchmarks" / "results"))
    return folder / "security.json"


@dataclass
class Tally:
    suite: str
    attacks: int = 0
    refused: int = 0
    leaked: int = 0
    failures: list[str] = field(default_factory=list)
    _reported: int = 0

    def record(self, name: str, *, refused: bool, leaked: bool = False) -> bool:
        """Count one attack; True when it was refused and returned nothing of the victim's."""
        self.attacks += 1
        self.refused += refused
        self.leaked += leaked
        if not refused or leaked:
            self.failures.append(f"{name}: {'leaked' if leaked else 'not refused'}")
        return refused and not leaked

    def new_failures(self) -> list[str]:
        """The failures recorded since the last call (each test asserts its own)."""
        new, self._reported = self.failures[self._reported:], len(self.failures)
        return new

    def write(self) -> None:
        """Merge this module's counts into the file, under a lock (modules of this folder
        finish on several pytest workers) and replaced whole (a reader never sees it
        half written)."""
        path = results_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.with_suffix(".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._merge(path)

    def _merge(self, path: Path) -> None:
        data = json.loads(path.read_text()) if path.exists() else {}
        suites = data.get("suites", {})
        suites[self.suite] = {"attacks": self.attacks, "refused": self.refused,
                              "leaked": self.leaked,
                              "when": datetime.now(UTC).isoformat(timespec="seconds")}
        data = {
            "benchmark": "security",
            "attacks": sum(s["attacks"] for s in suites.values()),
            "refused": sum(s["refused"] for s in suites.values()),
            "leaked": sum(s["leaked"] for s in suites.values()),
            "suites": dict(sorted(suites.items())),
        }
        staged = path.with_suffix(".tmp")
        staged.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(staged, path)

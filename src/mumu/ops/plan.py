"""A replay's plan and its checkpoint: what was asked, and how far it got.

Ctrl-C (or an error) writes the plan with the next position of each source; ``mumu replay
--resume`` reads it and continues from there with the same replay id (so a message whose
PubAck was still in flight is published under the same ``Nats-Msg-Id`` and deduplicated).
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from mumu.ops.selection import Selection

Action = Literal["dry-run", "to-file", "to-stage", "republish"]
FILE_SOURCE = "file"
"""The position key of a ``--from-file`` source (its next line, 1-based)."""


def new_replay_id() -> str:
    return uuid.uuid4().hex[:12]


@dataclass
class Plan:
    selection: Selection
    action: Action
    stage: str | None = None
    """``--to-stage``: only this stage handles the messages again."""
    out_file: str | None = None
    """``--to-file``."""
    from_file: str | None = None
    """``--from-file``: messages come from this export instead of streams."""
    rate: float | None = None
    sample: int = 3
    replay_id: str = field(default_factory=new_replay_id)
    positions: dict[str, int] = field(default_factory=dict)
    """Next position per source (stream name, or ``file``)."""
    finished: list[str] = field(default_factory=list)
    """Sources read to the end."""
    totals: dict[str, int] = field(default_factory=dict)
    """Counts carried over from the runs before a resume."""

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["selection"] = self.selection.as_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        data = dict(data)
        data["selection"] = Selection(**data["selection"])
        return cls(**data)

    def save(self, path: Path) -> None:
        """Written atomically (a crash mid-write keeps the previous checkpoint)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.as_dict(), indent=2) + "\n")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> Plan:
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except FileNotFoundError as exc:
            raise RuntimeError(f"no checkpoint at {path}: nothing to resume") from exc
        except (ValueError, TypeError, KeyError) as exc:
            raise RuntimeError(f"{path} is not a replay checkpoint: {exc}") from exc

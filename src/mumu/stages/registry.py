"""The one list of pipeline stages.

``mumu stage``, ``mumu up``, stream setup and the gateway's readiness and lag checks all
read this list. Adding a stage means its package (``mumu/stages/<name>/`` with
``stage.build_stage``), its contracts (subjects, events, ``contracts.consumers``), its
stream file in ``streams/`` and one line here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from mumu.contracts import consumers as c

if TYPE_CHECKING:
    from mumu.runtime.stage import Stage
    from mumu.settings import Settings


@dataclass(frozen=True, slots=True)
class StageSpec:
    """A stage: its name, the module with ``build_stage(settings)`` and its consumers."""

    name: str
    module: str
    consumers: tuple[c.StageConsumer, ...]

    def build(self, settings: Settings) -> Stage:
        """The stage, built (imports its module only now: heavy models stay unloaded)."""
        module = importlib.import_module(self.module)
        stage: Stage = module.build_stage(settings)
        return stage


STAGES: Final[tuple[StageSpec, ...]] = (
    StageSpec("ingest", "mumu.stages.ingest.stage", (c.INGEST_AUDIO,)),
    StageSpec("transcribe", "mumu.stages.transcribe.stage", (c.TRANSCRIBE_AUDIO,)),
    StageSpec("reason", "mumu.stages.reason.stage", (c.REASON_TRANSCRIPTS, c.REASON_TEXT)),
    StageSpec("persist", "mumu.stages.persist.stage", (c.PERSIST_RESULTS,)),
)
"""Every stage, in pipeline order."""


def stage_names() -> tuple[str, ...]:
    return tuple(s.name for s in STAGES)


def spec(name: str) -> StageSpec:
    for s in STAGES:
        if s.name == name:
            return s
    raise KeyError(f"no stage named {name!r} (known: {', '.join(stage_names())})")


def stage_consumers() -> tuple[c.StageConsumer, ...]:
    """Every stage's durable consumer, in pipeline order."""
    return tuple(consumer for s in STAGES for consumer in s.consumers)

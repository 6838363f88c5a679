"""The one list of pipeline stages.

``mumu stage``, ``mumu up``, the stream check and the gateway's readiness and lag checks
all read this list. Adding a stage means its package (``mumu/stages/<name>/`` with
``stage.build_stage(settings)``), its contracts (subjects, events, its durables in
``contracts.consumers``), its stream file in ``streams/`` and one line in ``STAGES``.
``Registry.with_stage`` gives a registry with one more stage (the tests register a
test-only stage that way).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterator
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

    @property
    def available(self) -> bool:
        """Whether this installation has the stage's module."""
        try:
            return importlib.util.find_spec(self.module) is not None
        except ModuleNotFoundError:
            return False

    @property
    def streams(self) -> tuple[str, ...]:
        """The streams its durable consumers read, in order, without repeats."""
        return tuple(dict.fromkeys(consumer.stream for consumer in self.consumers))


@dataclass(frozen=True, slots=True)
class Registry:
    """Stages in pipeline order."""

    stages: tuple[StageSpec, ...]

    def __iter__(self) -> Iterator[StageSpec]:
        return iter(self.stages)

    def __len__(self) -> int:
        return len(self.stages)

    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.stages)

    def available(self) -> tuple[str, ...]:
        """Names of the stages this installation can run (``mumu up`` starts these)."""
        return tuple(s.name for s in self.stages if s.available)

    def spec(self, name: str) -> StageSpec:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(f"no stage named {name!r} (known: {', '.join(self.names())})")

    def consumers(self) -> tuple[c.StageConsumer, ...]:
        """Every stage's durable consumer, in pipeline order."""
        return tuple(consumer for s in self.stages for consumer in s.consumers)

    def streams(self) -> tuple[str, ...]:
        """Every stream a stage consumes, in pipeline order, without repeats."""
        return tuple(dict.fromkeys(stream for s in self.stages for stream in s.streams))

    def with_stage(self, spec: StageSpec) -> Registry:
        if spec.name in self.names():
            raise ValueError(f"a stage named {spec.name!r} is registered already")
        return Registry((*self.stages, spec))


STAGES: Final = Registry((
    StageSpec("ingest", "mumu.stages.ingest.stage", (c.INGEST_AUDIO, c.INGEST_QUOTA_ENDS)),
    StageSpec("transcribe", "mumu.stages.transcribe.stage",
              (c.TRANSCRIBE_AUDIO, c.TRANSCRIBE_LIVE)),
    StageSpec("reason", "mumu.stages.reason.stage", (c.REASON_TRANSCRIPTS, c.REASON_TEXT)),
    StageSpec("persist", "mumu.stages.persist.stage", (c.PERSIST_RESULTS,)),
))
"""Every stage of mumu, in pipeline order."""


def stage_names() -> tuple[str, ...]:
    return STAGES.names()


def spec(name: str) -> StageSpec:
    return STAGES.spec(name)


def stage_consumers() -> tuple[c.StageConsumer, ...]:
    """Every stage's durable consumer, in pipeline order."""
    return STAGES.consumers()

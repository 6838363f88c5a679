"""``contracts.consumers`` names exactly the durables the stages' routes declare."""

from __future__ import annotations

from pydantic import SecretStr

from mumu.cli.stage import STAGE_NAMES, available_stages, build_stage
from mumu.contracts.consumers import STAGE_CONSUMERS
from mumu.runtime.stage import durable_of
from mumu.settings import Settings


def test_stage_consumers_are_the_durables_of_every_stage_route(
    settings: Settings, master_keys: str
) -> None:
    cfg = settings.model_copy(update={"master_keys": SecretStr(master_keys)})
    assert available_stages() == list(STAGE_NAMES)
    declared = set()
    for name in STAGE_NAMES:
        stage = build_stage(name, cfg)
        for route in stage.routes():
            declared.add((stage.name, route.stream, durable_of(stage.name, route)))
    assert {(c.stage, c.stream, c.durable) for c in STAGE_CONSUMERS} == declared
    assert len({c.durable for c in STAGE_CONSUMERS}) == len(STAGE_CONSUMERS)

"""The replay contract: each stage durable reads its own replay subject, stored by its own
stream; the runtime hands a replayed message to the handler on its original subject and
refuses one that would change workspace or is not the route's input."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from mumu.broker import roles
from mumu.broker.intake import ingest_shape
from mumu.broker.streams import load_stream_configs
from mumu.contracts import consumers
from mumu.contracts import headers as h
from mumu.contracts.subject_check import covers
from mumu.contracts.subjects import STREAM_INGEST, TRANSCRIPT_FINAL
from mumu.runtime.errors import PermanentError
from mumu.runtime.replayed import handled_subject
from mumu.settings import Settings
from mumu.stages.registry import STAGES


def test_every_durable_has_a_replay_subject_its_own_stream_stores_alone() -> None:
    configs = {c["name"]: c for c in load_stream_configs()}
    configs[STREAM_INGEST] = {**configs[STREAM_INGEST], **ingest_shape([{"name": "X"}])}
    assert set(consumers.DECLARED) == set(STAGES.consumers())
    for c in consumers.DECLARED:
        sample = c.replay.for_workspace("ws")
        owners = [n for n, cfg in configs.items() if any(covers(f, sample)
                                                         for f in cfg.get("subjects", []))]
        assert owners == [c.stream], c.durable
        assert consumers.replay_filter(c.durable) == c.replay.wildcard
    assert len({c.replay for c in consumers.DECLARED}) == len(consumers.DECLARED)


def test_every_stage_route_consumes_exactly_its_declared_inputs(
    settings: Settings, master_keys: str
) -> None:
    cfg = settings.model_copy(update={"master_keys": SecretStr(master_keys)})
    for spec in STAGES:
        by_durable = {c.durable: c for c in spec.consumers}
        for route in spec.build(cfg).routes():
            assert route.durable is not None
            declared = by_durable[route.durable].inputs
            assert set(route.subjects) == {p.wildcard for p in declared}, route.durable


def test_a_replayed_message_is_handled_on_its_original_subject() -> None:
    persist = consumers.PERSIST_RESULTS
    original = TRANSCRIPT_FINAL.for_workspace("ws-a")
    routes = tuple(p.wildcard for p in persist.inputs)
    replayed = persist.replay.for_workspace("ws-a")
    assert handled_subject(original, {}, routes) == original
    assert handled_subject(replayed, {h.REPLAY_SUBJECT: original}, routes) == original
    with pytest.raises(PermanentError, match="without Mumu-Replay-Subject") as missing:
        handled_subject(replayed, {}, routes)
    assert missing.value.code == "missing_header"
    # a replay cannot move a message into another workspace, or into another input
    with pytest.raises(PermanentError, match="another workspace"):
        handled_subject(persist.replay.for_workspace("ws-b"), {h.REPLAY_SUBJECT: original},
                        routes)
    with pytest.raises(PermanentError, match="not an input"):
        handled_subject(replayed, {h.REPLAY_SUBJECT: "mumu.answer.delta.ws-a"}, routes)


def test_only_the_operator_may_publish_on_replay_subjects() -> None:
    sample = [c.replay.for_workspace("ws-a") for c in consumers.DECLARED]
    everyone = [roles.produce("ws-a"), *(roles.service(r, ["ws-a"], STAGES.consumers())
                                         for r in roles.SERVICES)]
    for perms in everyone:
        assert not [s for s in sample for allowed in perms.publish if covers(allowed, s)]
    assert all(covers(allowed, s) for s in sample
               for allowed in roles.OPERATOR_PERMISSIONS.publish)

"""The stage registry is the one list of stages, and adding to it is all a stage needs.

* every registered stage's routes name exactly the durables its registry entry lists
  (``contracts.consumers``), and the streams they read are in ``streams/``;
* a test-only stage, registered through the registry alone, is built from it and runs
  under the real runtime on a real nats-server, on the durable its entry names;
* a test-only LLM backend plugs into the reason stage with no change to the stage: its
  declared concurrency and retry policy are what the runtime uses.
"""

from __future__ import annotations

import pytest
from nats.aio.client import Client as NATS
from pydantic import SecretStr

from mumu.bench.stream import BENCH_HOPS, STREAM_BENCH
from mumu.broker.streams import load_stream_configs
from mumu.contracts import headers as h
from mumu.contracts import subjects
from mumu.contracts.events import TextAsk, new_id
from mumu.runtime.metrics import StageMetrics
from mumu.settings import Settings
from mumu.stages.reason.stage import ReasonStage
from mumu.stages.registry import STAGES, StageSpec
from tests.harness import Collector, running
from tests.passthrough import CONSUMER, PassThrough, Ping
from tests.reason.asks import deltas_of, finals_of
from tests.reason.echo_backend import EchoBackend

WS = "ws-registry"


def test_every_route_names_the_durables_of_its_registry_entry(
    settings: Settings, master_keys: str
) -> None:
    cfg = settings.model_copy(update={"master_keys": SecretStr(master_keys)})
    assert STAGES.available() == STAGES.names()
    stream_files = {c["name"] for c in load_stream_configs()}
    for spec in STAGES:
        stage = spec.build(cfg)
        assert stage.name == spec.name
        routes = {(spec.name, r.stream, r.durable) for r in stage.routes()}
        assert routes == {(c.stage, c.stream, c.durable) for c in spec.consumers}, spec.name
        assert set(spec.streams) <= stream_files, spec.name
    durables = [c.durable for c in STAGES.consumers()]
    assert len(set(durables)) == len(durables)
    # ingest also reads MUMU_RESULTS (the ends of requests free their quota slots)
    assert STAGES.streams() == (subjects.STREAM_INGEST, subjects.STREAM_RESULTS,
                                subjects.STREAM_AUDIO)


def test_a_registry_refuses_a_second_stage_of_one_name() -> None:
    with pytest.raises(ValueError, match="registered already"):
        STAGES.with_stage(StageSpec("reason", "tests.passthrough", (CONSUMER,)))
    with pytest.raises(KeyError, match="known: ingest, transcribe, reason, persist"):
        STAGES.spec("passthrough")


async def test_a_stage_registered_through_the_registry_alone_runs_under_the_runtime(
    nc: NATS, streams: None, settings: Settings
) -> None:
    registry = STAGES.with_stage(StageSpec("passthrough", "tests.passthrough", (CONSUMER,)))
    assert registry.names()[-1] == "passthrough"
    assert "passthrough" in registry.available()  # what `mumu up` would start
    assert CONSUMER in registry.consumers()  # what the gateway's readiness would check
    assert STREAM_BENCH in registry.streams()  # what its lag check would watch
    stage = registry.spec("passthrough").build(settings)
    assert isinstance(stage, PassThrough)
    rid = new_id()
    ping = Ping(event_id=rid, request_id=rid, workspace_id=WS, session_id="s")
    async with running(stage, settings), Collector(nc) as seen:
        await nc.jetstream().publish(BENCH_HOPS[1].for_workspace(WS),
                                     ping.model_dump_json().encode(), headers={h.MSG_ID: rid})
        out = await seen.wait_count("mumu.bench.hop2.", 1)
    assert Ping.model_validate_json(out[0].data).hop == 2
    info = await nc.jetstream().consumer_info(CONSUMER.stream, CONSUMER.durable)
    assert info.num_ack_pending == 0 and info.delivered.stream_seq >= 1


async def test_a_new_llm_backend_plugs_into_the_reason_stage_with_no_stage_change(
    nc: NATS, workspaces, settings: Settings
) -> None:
    await workspaces(WS)
    backend = EchoBackend()
    stage = ReasonStage(settings.reason, backend)
    assert {r.concurrency for r in stage.routes()} == {1}  # declared by the backend
    assert {r.retry for r in stage.routes()} == {backend.retry}
    metrics = StageMetrics("reason")
    rid = new_id()
    ask = TextAsk(event_id=rid, request_id=rid, workspace_id=WS, session_id="s", text="2+2?")
    async with running(stage, settings, metrics=metrics), Collector(nc) as seen:
        await nc.jetstream().publish(subjects.INGEST_TEXT.for_workspace(WS),
                                     ask.model_dump_json().encode(), headers={h.MSG_ID: rid})
        await seen.wait_for(lambda _: bool(finals_of(seen, rid)), timeout=15)
    (final,) = finals_of(seen, rid)
    assert final.text == "You asked: 2+2?"
    assert final.model == "echo"
    assert "".join(d.text for d in deltas_of(seen, rid)) == final.text
    assert backend.calls == 2
    retried = metrics.registry.get_sample_value("mumu_stage_messages_total", {
        "stage": "reason", "route": "mumu_ingest", "outcome": "retry"})
    assert retried == 1  # the runtime retried in place, as the backend's policy allows

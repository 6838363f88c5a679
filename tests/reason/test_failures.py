"""A failing backend through the whole stage, with a fault injector before the real server."""

from __future__ import annotations

from nats.aio.client import Client as NATS

from mumu.contracts import subjects
from mumu.contracts.events import PipelineError
from mumu.runtime.client_errors import FIXED
from mumu.settings import Settings
from mumu.stages.reason.stage import build_stage
from tests.harness import Collector, running
from tests.reason.asks import ask_text, deltas_of, finals_of, wait_final
from tests.reason.conftest import ModelServer, reason_settings
from tests.reason.fault_proxy import FaultProxy, serving


async def test_a_retry_after_a_failure_that_showed_nothing_is_no_restart(
    nc: NATS, streams: None, settings: Settings, model_server: ModelServer
) -> None:
    """Delivery 1 meets a 503 before any delta: delivery 2's deltas are not a restart."""
    fault = FaultProxy(model_server.base_url, [(503, None)])
    async with serving(fault) as url:
        cfg = reason_settings(settings, url)
        async with running(build_stage(cfg), cfg), Collector(nc) as seen:
            ask = await ask_text(nc, "What is the capital of France?", session="s-quiet")
            final = await wait_final(seen, ask.request_id)
    assert len(fault.seen) == 2  # the 503, then the real answer
    deltas = deltas_of(seen, ask.request_id)
    assert {d.attempt for d in deltas} == {2}
    assert not any(d.restart for d in deltas)
    assert "".join(d.text for d in deltas) == final.text
    assert "Paris" in final.text


async def test_a_backend_failing_with_503_is_naked_then_dead_lettered(
    nc: NATS, streams: None, settings: Settings, model_server: ModelServer
) -> None:
    fault = FaultProxy(model_server.base_url, [(503, None)] * 20)
    async with serving(fault) as url:
        cfg = reason_settings(settings, url)
        async with running(build_stage(cfg), cfg), Collector(nc) as seen:
            ask = await ask_text(nc, "Anyone there?", session="s-503")
            errors = await seen.wait_count("mumu.error.", 1, timeout=20)
            letters = await seen.wait_count("mumu.dlq.", 1)
    err = PipelineError.model_validate_json(errors[0].data)
    assert (err.code, err.request_id, err.stage) == ("reason_unavailable", ask.request_id, "reason")
    # the client is told the model is unavailable; the backend's answer is the operators'
    assert err.message == FIXED["reason_unavailable"]
    assert "503" in letters[0].headers["Mumu-Dlq-Reason"]
    assert letters[0].subject == subjects.DLQ.stage("reason").for_workspace(err.workspace_id)
    max_deliver = cfg.stage.max_deliver
    assert letters[0].headers["Mumu-Dlq-Deliveries"] == str(max_deliver)
    assert len(fault.seen) == max_deliver  # one call per delivery (no in-process retries here)
    gaps = [b - a for a, b in zip(fault.seen, fault.seen[1:], strict=False)]
    backoff = cfg.stage.backoff
    assert all(gap >= backoff[n] for n, gap in enumerate(gaps)), (gaps, backoff)
    assert gaps[-1] > gaps[0]  # the naks grew
    assert not finals_of(seen, ask.request_id)
    assert not deltas_of(seen, ask.request_id)

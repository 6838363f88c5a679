"""``Inbound.of``: a delivery in memory, so a handler runs in a unit test without a server
(the real-server tests of the same handlers stay: this only adds fast ones)."""

from __future__ import annotations

import pytest

from mumu.contracts import headers as h
from mumu.contracts.events import new_id
from mumu.runtime import Inbound, Outbound, PermanentError, TransientError
from tests.passthrough import PassThrough, Ping

WS = "ws-mem"


def ping(behaviour: str = "ok") -> Ping:
    rid = new_id()
    return Ping(event_id=rid, request_id=rid, workspace_id=WS, session_id="s",
                behaviour=behaviour)  # type: ignore[arg-type]


def test_an_inbound_of_an_event_carries_its_body_subject_and_headers() -> None:
    p = ping()
    inbound = Inbound.of(p, subject=f"mumu.bench.hop1.{WS}", headers={h.REQUEST_ID: "r"},
                         deliveries=2)
    assert inbound.body() is p
    assert inbound.data == p.model_dump_json().encode()
    assert (inbound.workspace_id, inbound.deliveries, inbound.request_id) == (WS, 2, p.request_id)
    raw = Inbound[Ping].of(b"\x00\x01", subject=f"mumu.ingest.audio.{WS}",
                           headers={h.REQUEST_ID: "r-raw"})
    assert (raw.data, raw.request_id, raw.event) == (b"\x00\x01", "r-raw", None)
    with pytest.raises(TypeError):
        raw.body()


async def test_a_handler_runs_in_memory_and_its_emitted_outputs_are_kept() -> None:
    stage = PassThrough()
    p = ping()
    inbound = Inbound.of(p, subject=f"mumu.bench.hop1.{WS}")
    (out,) = await stage.handle(inbound)
    assert out.subject == f"mumu.bench.hop2.{WS}"
    assert Ping.model_validate_json(out.payload).hop == 2
    assert inbound.emitted == []
    emitted = Outbound(subject="x.y", payload=b"{}", msg_id="m")
    await inbound.emit(emitted)
    assert inbound.emitted == [emitted]


async def test_handler_failures_are_raised_as_they_would_reach_the_runtime() -> None:
    stage = PassThrough()
    with pytest.raises(PermanentError) as permanent:
        await stage.handle(Inbound.of(ping("permanent"), subject=f"mumu.bench.hop1.{WS}"))
    assert permanent.value.code == "unsupported_audio"
    flaky = ping("flaky")
    with pytest.raises(TransientError):
        await stage.handle(Inbound.of(flaky, subject=f"mumu.bench.hop1.{WS}"))
    assert await stage.handle(Inbound.of(flaky, subject=f"mumu.bench.hop1.{WS}", deliveries=2))

"""Hypothesis-generated audio into ingest on both paths, raw NATS and the gateway, with the
real ingest stage on a real server: every message ends exactly once, as normalised audio
or as one dead letter with a reason; the gateway answers a precise 4xx or accepts; and a
valid clip after all of it is still normalised."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from nats.aio.client import Client as NATS

from mumu.contracts import headers as h
from mumu.contracts import subjects
from mumu.contracts.events import new_id
from mumu.settings import Settings
from mumu.stages.ingest.stage import build_stage as build_ingest
from tests.conftest import Ensure
from tests.fuzz.audio_strategies import labelled
from tests.fuzz.deadletters import run_examples
from tests.fuzz.ingest_outcomes import a_valid_clip_still_flows, ends_once, outcomes
from tests.gateway.conftest import WS_A, gateway_settings, serving
from tests.harness import Collector, running

pytestmark = [pytest.mark.fuzz, pytest.mark.slow, pytest.mark.timeout(600)]

EXAMPLES = 60
CLEAR = {400, 413, 415, 422}
"""What the gateway may answer bad audio with (besides 202: ingest finds out later)."""


async def test_generated_audio_into_ingest_over_nats(
    nc: NATS, streams: None, workspaces: Ensure, settings: Settings,
) -> None:
    ws = "ws-fuzz-audio"
    await workspaces(ws)
    js = nc.jetstream()
    loop = asyncio.get_running_loop()
    ends: list[str] = []
    async with running(build_ingest(settings), settings) as task, \
            Collector(nc, "mumu.>") as seen:

        async def one(data: bytes, content_type: str) -> None:
            rid = new_id()
            await js.publish(subjects.INGEST_AUDIO.for_workspace(ws), data, headers={
                h.CONTENT_TYPE: content_type, h.SESSION: "s", h.REQUEST_ID: rid,
                h.MSG_ID: f"{ws}.{rid}"})
            ends.append(await ends_once(seen, rid))

        await asyncio.to_thread(run_examples, loop, labelled, lambda ex: one(*ex), EXAMPLES, 90)
        await a_valid_clip_still_flows(nc, seen, ws)
        assert not task.done()
    # the examples reached both outcomes: real files (whatever their label) and refusals
    assert {"ready", "letter"} <= set(ends), ends


async def test_generated_audio_through_the_gateway(
    nc: NATS, streams: None, settings: Settings, tmp_path: Path,
) -> None:
    cfg = gateway_settings(settings, wait_timeout=5.0)
    loop = asyncio.get_running_loop()
    statuses: dict[int, int] = {}
    async with running(build_ingest(cfg), cfg) as task, serving(cfg) as gw, \
            Collector(nc, "mumu.>") as seen, aiohttp.ClientSession() as http:
        auth = {"Authorization": f"Bearer {gw.token(WS_A)}"}

        async def one(data: bytes, content_type: str) -> None:
            rid = new_id()
            form = aiohttp.FormData()
            form.add_field("audio", data, filename="clip", content_type=content_type)
            async with http.post(f"{gw.url}/api/ask?request_id={rid}", data=form,
                                 headers=auth) as resp:
                body = await resp.json()
                statuses[resp.status] = statuses.get(resp.status, 0) + 1
                if resp.status != 202:
                    assert resp.status in CLEAR, (resp.status, body)
                    assert body["error"]["code"] and body["error"]["message"]
                    assert not outcomes(seen.messages, rid), "refused, yet published"
                    return
            await ends_once(seen, rid)

        await asyncio.to_thread(run_examples, loop, labelled, lambda ex: one(*ex), EXAMPLES, 90)
        await a_valid_clip_still_flows(nc, seen, WS_A)
        assert not task.done()
    assert statuses.get(202) and set(statuses) & CLEAR, statuses

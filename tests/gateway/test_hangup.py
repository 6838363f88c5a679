"""A client that hangs up while its request waits gives its waiting place back at once,
not at ``wait_timeout`` (``gateway/hangup.py``): a workspace with one place can wait
again within seconds. No stage runs: the requests wait until the test answers them."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp
import pytest
from nats.aio.client import Client as NATS

from mumu.settings import Settings
from tests.gateway.conftest import Gateway, Results, gateway_settings, rid, serving
from tests.gateway.test_http import wav
from tests.harness import Collector
from tests.pg_fixtures import WorkspaceFactory

WAIT_TIMEOUT = 60.0
"""Without the feature the hung-up request would hold its place this long."""
ADMITTED_WITHIN = 10.0
PUBLISHED = "mumu.ingest."



@dataclass
class Client:
    gw: Gateway
    workspace: str
    api_key: str

    async def waiting_ask(self, http: aiohttp.ClientSession, request_id: str
                          ) -> aiohttp.ClientResponse:
        async with http.post(f"{self.gw.url}/api/session", json={"session_id": "w"},
                             headers={"Authorization": f"Bearer {self.api_key}"}) as session:
            token = (await session.json())["token"]
        return await http.post(f"{self.gw.url}/api/ask?wait=true&request_id={request_id}",
                               json={"text": "wait for me"},
                               headers={"Authorization": f"Bearer {token}"})

    async def streaming_transcription(self, http: aiohttp.ClientSession, request_id: str
                                      ) -> aiohttp.ClientResponse:
        """``stream=true`` on the OpenAI route: the SSE response starts once the audio is
        published, then waits for segments (``request_id``: the gateway names its own)."""
        form = aiohttp.FormData()
        form.add_field("file", wav(0.5), filename="q.wav", content_type="audio/wav")
        form.add_field("model", "whisper-1")
        form.add_field("stream", "true")
        return await http.post(f"{self.gw.url}/v1/audio/transcriptions", data=form,
                               headers={"Authorization": f"Bearer {self.api_key}"})


async def admitted(http: aiohttp.ClientSession, client: Client, seen: Collector,
                   published: int, request_id: str) -> asyncio.Task[aiohttp.ClientResponse]:
    """A waiting ask sent until the gateway admits it (its publish is the
    ``published``-th seen) rather than answering 429; the admitted ask, still waiting."""
    async with asyncio.timeout(ADMITTED_WITHIN):
        while True:
            attempt = asyncio.create_task(client.waiting_ask(http, request_id))
            publish = asyncio.create_task(seen.wait_count(PUBLISHED, published, 2 * WAIT_TIMEOUT))
            await asyncio.wait({attempt, publish}, return_when=asyncio.FIRST_COMPLETED)
            if publish.done():
                return attempt
            publish.cancel()
            refused = attempt.result()
            assert refused.status == 429, await refused.text()
            await asyncio.sleep(0.2)  # the place is still held: ask again


@pytest.mark.parametrize("route", ["waiting_ask", "streaming_transcription"])
async def test_a_client_that_hangs_up_gives_its_waiting_place_back(
    route: str, nc: NATS, streams: None, settings: Settings, pg_settings: Settings,
    workspace: WorkspaceFactory, http: aiohttp.ClientSession, results: Results,
) -> None:
    capped = gateway_settings(settings, max_waiting_per_workspace=1, wait_timeout=WAIT_TIMEOUT)
    capped = capped.model_copy(update={"database_url": pg_settings.database_url})
    ws, api_key = await workspace("hangup")
    async with serving(capped) as gw, Collector(nc, f"{PUBLISHED}>") as seen:
        client = Client(gw, ws, api_key)
        async with aiohttp.ClientSession() as own:  # a connection of its own, to close
            gone = asyncio.create_task(getattr(client, route)(own, rid()))
            await seen.wait_count(PUBLISHED, 1)
            held = await client.waiting_ask(http, rid())  # the one place is taken
            gone.cancel()
        # the session is closed: the first client hung up before its result
        second = rid()
        waiting = await admitted(http, client, seen, 2, second)
        await results.final(ws, "w", second, "the answer")
        answered = await asyncio.wait_for(waiting, 10)
        body = await answered.json()
    assert (held.status, (await held.json())["error"]["code"]) == (429, "too_many_waiting")
    assert (answered.status, body["answer"]) == (200, "the answer")

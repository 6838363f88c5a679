"""The audio quotas, known only once ingest has decoded the audio: longest audio and
audio seconds per day (real nats-server, PostgreSQL, ingest; real speech clips). Raw
NATS producers get ``quota_exceeded`` and no ``audio.ready``; once the day's seconds are
spent, the gateway refuses audio asks with 429."""

from __future__ import annotations

import json
import wave
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import asyncpg
import pytest
from nats.aio.client import Client as NATS

from mumu.contracts import subjects
from mumu.db.quotas import set_limit_overrides
from mumu.settings import Settings
from mumu.stages.ingest.stage import build_stage as build_ingest
from tests.audio.conftest import SPEECH, publish_audio
from tests.conftest import Ensure
from tests.gateway.conftest import serving
from tests.gateway.quota_kit import auth, error_codes, quota_settings
from tests.harness import Collector, Seen, running
from tests.pg_fixtures import WorkspaceFactory

CLIP = (SPEECH / "en01.wav").read_bytes()
with wave.open(str(SPEECH / "en01.wav")) as _clip:
    CLIP_SECONDS = _clip.getnframes() / _clip.getframerate()  # about 4.04 s


def ready(messages: list[Seen], ws: str) -> set[str]:
    return {json.loads(m.data)["request_id"] for m in messages
            if m.subject == subjects.AUDIO_READY.for_workspace(ws)}


def outcomes(seen: Collector, ws: str) -> int:
    return len(ready(seen.messages, ws)) + len(error_codes(seen.messages, ws))


async def audio_ask(http: aiohttp.ClientSession, url: str, token: str, *, wait: bool = False
                    ) -> tuple[int, dict[str, Any], dict[str, str]]:
    """The clip asked over HTTP as a form upload: status, JSON body, headers."""
    form = aiohttp.FormData()
    form.add_field("audio", CLIP, filename="q.wav", content_type="audio/wav")
    params = {"wait": "true"} if wait else {}
    async with http.post(f"{url}/api/ask", params=params, data=form,
                         headers=auth(token)) as resp:
        return resp.status, await resp.json(), dict(resp.headers)


@pytest.fixture
def cfg(settings: Settings, pg_settings: Settings) -> Settings:
    """The gateway's and ingest's settings on the test servers, quotas from PostgreSQL."""
    return quota_settings(settings, pg_settings)


Limited = Callable[..., Awaitable[list[str]]]


@pytest.fixture
def limited(workspace: WorkspaceFactory, workspaces: Ensure, admin_conn: asyncpg.Connection
            ) -> Limited:
    """``await limited(limits, "a", "b")``: the workspaces, in the database and on the
    broker, the first with these limits; their ids."""

    async def make(limits: dict[str, float], *names: str) -> list[str]:
        ids = [(await workspace(name))[0] for name in names]
        await workspaces(*ids)
        await set_limit_overrides(admin_conn, ids[0], limits)
        return ids

    return make


async def test_audio_longer_than_the_workspace_allows_is_refused_after_decoding(
    nc: NATS, streams: None, cfg: Settings, limited: Limited,
) -> None:
    ws_a, ws_b = await limited({"longest_audio": 3.0}, "a", "b")
    async with (Collector(nc) as seen, running(build_ingest(cfg), cfg), serving(cfg) as gw,
                aiohttp.ClientSession() as http):
        refused = await publish_audio(nc, CLIP, ws=ws_a)
        accepted = await publish_audio(nc, CLIP, ws=ws_b)
        await seen.wait_for(lambda _: outcomes(seen, ws_a) + outcomes(seen, ws_b) >= 2,
                            timeout=20)
        # a gateway client waiting for its result learns it as a 429
        status, body, headers = await audio_ask(http, gw.url, await gw.key_token(ws_a),
                                                wait=True)
        assert status == 429, body
        assert body["error"]["code"] == "quota_exceeded"
        assert "longest audio is 3 s" in body["error"]["message"]
        assert headers["Retry-After"] == "60"
    assert ready(seen.messages, ws_a) == set()
    codes = error_codes(seen.messages, ws_a)
    assert codes[refused] == "quota_exceeded" and set(codes.values()) == {"quota_exceeded"}
    error = next(json.loads(m.data) for m in seen.on(subjects.ERROR.for_workspace(ws_a))
                 if json.loads(m.data)["request_id"] == refused)
    assert "longest audio is 3 s" in error["message"]
    assert ready(seen.messages, ws_b) == {accepted}  # B keeps the default (1800 s)
    letters = seen.on(subjects.DLQ.stage("ingest").prefix)
    assert [m.headers["Mumu-Dlq-Code"] for m in letters] == ["quota_exceeded"] * 2


async def test_audio_seconds_per_day_stop_raw_producers_and_then_gateway_asks(
    nc: NATS, streams: None, cfg: Settings, limited: Limited, admin_conn: asyncpg.Connection,
) -> None:
    # room for two clips and a bit, not three
    (ws,) = await limited({"audio_seconds_per_day": 2.5 * CLIP_SECONDS}, "a")
    async with (Collector(nc) as seen, running(build_ingest(cfg), cfg), serving(cfg) as gw,
                aiohttp.ClientSession() as http):
        first = [await publish_audio(nc, CLIP, ws=ws) for _ in range(2)]
        await seen.wait_for(lambda _: outcomes(seen, ws) >= 2, timeout=20)
        assert ready(seen.messages, ws) == set(first)
        third = await publish_audio(nc, CLIP, ws=ws)
        await seen.wait_for(lambda _: outcomes(seen, ws) >= 3, timeout=20)
        assert error_codes(seen.messages, ws) == {third: "quota_exceeded"}
        # a redelivery or replay of a charged request is not charged twice
        again = await publish_audio(nc, CLIP, ws=ws, request_id=first[0],
                                    extra={"Nats-Msg-Id": f"{ws}.{first[0]}.again"})
        await seen.wait_for(lambda _: len(seen.on(subjects.AUDIO_READY.for_workspace(ws)))
                            >= 3, timeout=20)
        assert again == first[0]
        # the operator lowers the day's quota to what is used: the gateway now refuses
        # audio asks at once (429), before anything is published or decoded
        await set_limit_overrides(admin_conn, ws, {"audio_seconds_per_day": 2 * CLIP_SECONDS})
        status, body, headers = await audio_ask(http, gw.url, await gw.key_token(ws))
        assert status == 429, body
        assert body["error"]["code"] == "quota_exceeded"
        assert "audio quota" in body["error"]["message"]
        assert int(headers["Retry-After"]) >= 1
    (error,) = [json.loads(m.data) for m in seen.on(subjects.ERROR.for_workspace(ws))]
    assert "would pass the workspace's audio quota" in error["message"]


async def test_raw_audio_asks_past_the_per_minute_quota_are_refused_before_decoding(
    nc: NATS, streams: None, cfg: Settings, limited: Limited,
) -> None:
    (ws,) = await limited({"asks_per_minute": 2}, "a")
    async with Collector(nc) as seen, running(build_ingest(cfg), cfg):
        asks = [await publish_audio(nc, CLIP, ws=ws) for _ in range(3)]
        await seen.wait_for(lambda _: outcomes(seen, ws) >= 3, timeout=20)
    done, codes = ready(seen.messages, ws), error_codes(seen.messages, ws)
    assert len(done) == 2 and done <= set(asks)
    assert codes == dict.fromkeys(set(asks) - done, "quota_exceeded")
    (error,) = [json.loads(m.data) for m in seen.on(subjects.ERROR.for_workspace(ws))]
    assert "2 per minute" in error["message"]

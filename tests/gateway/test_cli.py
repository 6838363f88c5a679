"""``mumu ask`` against a running gateway: text and audio, streamed to the terminal."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import aiohttp
import pytest
from nats.aio.client import Client as NATS

from mumu.settings import Settings
from mumu.stages.persist.stage import build_stage as build_persist
from tests.gateway.conftest import gateway_settings, serving
from tests.gateway.pipeline import SPEECH, pipeline_settings, stages
from tests.harness import running
from tests.pg_fixtures import WorkspaceFactory

pytestmark = pytest.mark.timeout(240)


async def mumu_ask(url: str, key: str, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "MUMU_GATEWAY__CLIENT_API_KEY": key, "MUMU_LOG_LEVEL": "WARNING"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mumu", "ask", "--url", url, *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 180)
    return int(proc.returncode or 0), out.decode(), err.decode()


async def stored_answers(url: str, key: str, said: str) -> list[str]:
    """The answers stored in the session ``mumu ask`` named on stderr ("(session …)"),
    whitespace collapsed; the persist stage writes them a moment after the answer."""
    found = re.search(r"\(session ([^)]+)\)", said)
    assert found, said
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{url}/api/session", json={"session_id": found[1]},
                             headers={"Authorization": f"Bearer {key}"}) as resp:
            token = (await resp.json())["token"]
        async with asyncio.timeout(30):
            while True:
                async with http.get(f"{url}/api/sessions/{found[1]}/history",
                                    headers={"Authorization": f"Bearer {token}"}) as resp:
                    body = await resp.json()
                assert resp.status == 200, body
                items = body["items"]
                answers = [" ".join(i["text"].split()) for i in items if i["kind"] == "answer"]
                if answers:
                    return answers
                await asyncio.sleep(0.5)


async def test_mumu_ask_streams_the_answer_for_text_and_audio(
    nc: NATS, streams: None, settings: Settings, pg_settings: Settings,
    workspace: WorkspaceFactory, model_cache: Path,
) -> None:
    cfg = gateway_settings(pipeline_settings(settings, model_cache))
    cfg = cfg.model_copy(update={"database_url": pg_settings.database_url,
                                 "master_keys": pg_settings.master_keys})
    _, key = await workspace("cli")
    async with stages(cfg), running(build_persist(cfg), cfg), serving(cfg) as gw:
        code, out, err = await mumu_ask(gw.url, key, "What colour is the sky on a clear day?")
        assert code == 0, err
        assert "blue" in out.lower(), out
        audio_code, audio_out, audio_err = await mumu_ask(
            gw.url, key, "--audio", str(SPEECH / "en01.wav"))
        bad_code, _, bad_err = await mumu_ask(gw.url, "mumu_wrong", "hello?")
        stored = await stored_answers(gw.url, key, audio_err)
    assert audio_code == 0, audio_err
    assert "quick brown fox" in audio_err.lower()  # the transcript, on stderr
    # the answer on stdout, as streamed, is the one the persist stage stored
    assert audio_out.strip() and " ".join(audio_out.split()) in stored, (audio_out, stored)
    assert bad_code == 1
    assert "unknown or revoked API key" in bad_err

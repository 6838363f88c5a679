"""The demo page in headless Debian Chromium: record from a fake microphone, see the answer."""

from __future__ import annotations

import io
import json
import os
import re
import time
import wave
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from mumu.settings import Settings
from mumu.stages.persist.stage import build_stage as build_persist
from tests.gateway.cdp import CHROMIUM, Page, chromium
from tests.gateway.conftest import gateway_settings, serving
from tests.gateway.pipeline import SPEECH, pipeline_settings, stages
from tests.harness import running
from tests.pg_fixtures import WorkspaceFactory

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian chromium"),
]
SCREENSHOT = Path(__file__).resolve().parents[2] / "tests" / "artifacts" / "demo.png"
"""Saved by every run (git-ignored); docs/img/demo.png, shown in the README, is one of them."""


def padded(clip: Path, out: Path, before: float = 0.5, after: float = 1.0) -> float:
    """The clip with silence around it (the fake microphone plays it once); its duration."""
    with wave.open(str(clip)) as src:
        params, frames = src.getparams(), src.readframes(src.getnframes())
    silence = b"\0" * params.sampwidth * params.nchannels
    buf = io.BytesIO()
    with wave.open(buf, "wb") as dst:
        dst.setparams(params)
        dst.writeframes(silence * int(before * params.framerate) + frames
                        + silence * int(after * params.framerate))
    out.write_bytes(buf.getvalue())
    return float(before + after + params.nframes / params.framerate)


async def test_recording_on_the_demo_page_shows_transcript_and_answer(
    nc: NATS, streams: None, settings: Settings, pg_settings: Settings,
    workspace: WorkspaceFactory, model_cache: Path, tmp_path: Path,
) -> None:
    cfg = gateway_settings(pipeline_settings(settings, model_cache), wait_timeout=120.0)
    cfg = cfg.model_copy(update={
        "database_url": pg_settings.database_url, "master_keys": pg_settings.master_keys,
    })
    _, api_key = await workspace("demo")
    fake_mic = tmp_path / "mic.wav"
    seconds = padded(SPEECH / "en01.wav", fake_mic)
    async with stages(cfg), running(build_persist(cfg), cfg), serving(cfg) as gw, chromium(
        gw.url + "/", tmp_path / "profile", fake_mic
    ) as page:
        await page.call("Emulation.setDeviceMetricsOverride", width=900, height=1000,
                        deviceScaleFactor=1, mobile=False)
        await page.js(f"document.getElementById('api-key').value = {json.dumps(api_key)};"
                      "document.getElementById('start').click()")
        await page.wait_for("document.getElementById('status').textContent"
                            ".startsWith('Connected')")
        await page.js("document.getElementById('record').click()")
        await page.wait_for("document.getElementById('record').classList.contains('on')")
        await page.js(f"new Promise(r => setTimeout(r, {int(seconds * 1000)}))")
        await page.js("document.getElementById('record').click()")
        try:
            await page.wait_for("!!document.querySelector('.request.done')", timeout=120)
        except TimeoutError:
            raise AssertionError(await page.js("JSON.stringify(state.log)")) from None
        transcript = await page.js("document.querySelector('.request .transcript').textContent")
        answer = await page.js("document.querySelector('.request .answer').textContent")
        await page.js("document.getElementById('text').value = 'What colour is the sky?';"
                      "document.querySelector('#text-form button').click()")
        await page.wait_for("document.querySelectorAll('.request.done').length === 2", 60)
        await page.wait_for(  # stored by the persist stage a moment after the answers
            "document.getElementById('load-history').click() ||"
            " document.querySelectorAll('#history-items li').length >= 3", 30)
        history = await page.js("document.getElementById('history-items').innerText")
        await page.screenshot(SCREENSHOT)
    words = re.sub(r"[^\w\s]", " ", transcript.lower()).split()
    assert {"quick", "brown", "fox"} <= set(words), transcript
    # the answer the page streamed is the one the persist stage stored (the history)
    assert answer.strip() and " ".join(answer.split()) in " ".join(history.split()), (
        answer, history)
    assert "fox" in history.lower()
    assert "sky" in history.lower()
    assert SCREENSHOT.stat().st_size > 10_000


async def ask_on_page(page: Page, question: str) -> None:
    await page.js(f"document.getElementById('text').value = {json.dumps(question)};"
                  "document.querySelector('#text-form button').click()")


async def test_the_demo_page_keeps_its_session_past_the_token_expiry(
    nc: NATS, streams: None, settings: Settings, pg_settings: Settings,
    workspace: WorkspaceFactory, model_cache: Path, tmp_path: Path,
) -> None:
    ttl = 8.0
    cfg = gateway_settings(pipeline_settings(settings, model_cache), wait_timeout=120.0,
                           session_ttl=ttl)
    cfg = cfg.model_copy(update={
        "database_url": pg_settings.database_url, "master_keys": pg_settings.master_keys,
    })
    _, api_key = await workspace("demo-ttl")
    fake_mic = tmp_path / "mic.wav"
    padded(SPEECH / "en01.wav", fake_mic)
    async with stages(cfg), serving(cfg) as gw, chromium(
        gw.url + "/", tmp_path / "profile", fake_mic
    ) as page:
        # every message the page handles, in order (onMessage is the page's one entry),
        # and every websocket it opens
        await page.js("window.seen = []; const handle = onMessage;"
                      "onMessage = (m) => { seen.push(m); handle(m); };"
                      "window.opened = 0; WebSocket = class extends WebSocket {"
                      " constructor(...a) { super(...a); opened += 1; } }")
        first_expiry = (time.time() + ttl) * 1000
        await page.js(f"document.getElementById('api-key').value = {json.dumps(api_key)};"
                      "document.getElementById('start').click()")
        await page.wait_for("document.getElementById('status').textContent"
                            ".startsWith('Connected')")
        started_session = await page.js("state.sessionId")
        await ask_on_page(page, "What is the capital of France?")
        await page.wait_for("document.querySelectorAll('.request.done').length === 1", 90)
        # 1. renewed before expiry: the open socket gets an "auth" message and stays open
        await page.wait_for(f"Date.now() > {first_expiry} + 1000", ttl + 5)
        assert await page.js("opened") == 1
        types = await page.js("seen.map(m => m.type)")
        assert "authenticated" in types and "error" not in types, types
        # 2. no renewal in time (a sleeping laptop): the server closes with 4401, the page
        # gets a new token for its session and resumes from its cursor; a question asked
        # just before the expiry streams its answer across the reconnect
        await page.js("clearTimeout(state.renewTimer)")
        await page.wait_for("Date.now() > 1000 * seen.filter(m => m.type === 'authenticated')"
                            ".at(-1).expires_at - 1500", ttl + 5)
        await ask_on_page(page, "What colour is the sky?")
        try:
            await page.wait_for("document.querySelectorAll('.request.done').length === 2 &&"
                                " seen.some(m => m.type === 'resumed')", 90)
        except TimeoutError:
            raise AssertionError(await page.js("JSON.stringify(state.log)")) from None
        seen = await page.js("seen")
        session = await page.js("state.sessionId")
        answers = await page.js(
            "Object.values(state.cards).map(c => [c.answer,"
            " c.el.querySelector('.answer').textContent])")
        sockets = await page.js("opened")
    assert sockets == 2
    expired = [m for m in seen if m.get("code") == "token_expired"]
    assert len(expired) == 1
    resumed = [m for m in seen if m["type"] == "resumed"]
    assert [m["after"] for m in resumed] == [max(  # resumed after the last event it had
        m["cursor"] for m in seen[:seen.index(expired[0])] if m["type"] in EVENTS)]
    events = [m["cursor"] for m in seen if m["type"] in EVENTS]
    assert events == sorted(set(events)), events  # every event once, in order
    # nothing lost: each answer's streamed deltas add up to its final text
    assert len(answers) == 2
    assert all(streamed == final and final for streamed, final in answers), answers
    assert session == started_session  # the same session, renewed twice over


EVENTS = {"transcript.partial", "transcript.final", "answer.delta", "answer.final"}

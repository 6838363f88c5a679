"""The demo page's live mode in headless Debian Chromium, whose fake microphone plays a
speech clip at the pace of speech: the page streams it as 16 kHz PCM16 frames, and on the
real gateway, broker and model its words appear while they are still being spoken."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import wave
from pathlib import Path

import numpy as np
import pytest
from nats.aio.client import Client as NATS

from mumu.settings import Settings
from tests.gateway.cdp import CHROMIUM, Page, chromium
from tests.gateway.conftest import gateway_settings, serving
from tests.gateway.live_page import (
    BEFORE,
    click,
    edits,
    pcm_of,
    press,
    spoken,
    static_site,
    windows_found,
    words,
)
from tests.gateway.pipeline import SPEECH, pipeline_settings, stages
from tests.gateway.test_demo_page import padded
from tests.pg_fixtures import WorkspaceFactory

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian chromium"),
]
CLIP = SPEECH / "en08.wav"


FAKE_SOCKET = """
window.sent = [];
state.ws = { readyState: WebSocket.OPEN, send: (d) => sent.push(typeof d === 'string'
  ? JSON.parse(d) : btoa(String.fromCharCode(...new Uint8Array(d)))) };
document.getElementById('ask').hidden = false;
"""
"""A socket that keeps what the page sends (text as objects, frames as base64)."""


async def test_the_page_streams_the_microphone_as_16khz_pcm16_frames(tmp_path: Path) -> None:
    fake_mic = tmp_path / "mic.wav"
    seconds = padded(CLIP, fake_mic, before=BEFORE, after=0.3)
    async with static_site() as url, chromium(url + "/", tmp_path / "profile", fake_mic) as page:
        await page.js(FAKE_SOCKET)
        await page.js("document.getElementById('hands-free').click()")
        await click(page, "#talk")  # hands-free: a click starts, the next one stops
        await page.wait_for("sent.length === 1")
        start = await page.js("sent[0]")
        await page.js("liveMessage({type: 'stream.started', request_id: 'r', stream_id: 's'})")
        await page.wait_for(f"live.captured >= {int(seconds * 16000)}", seconds + 20)
        rate = await page.js("live.ctx.sampleRate")
        await click(page, "#talk")
        await page.wait_for("live.phase === 'idle'")
        sent = await page.js("sent")
        status = await page.js("document.getElementById('live-status').textContent")
    assert start == {"type": "stream.start", "format": "pcm16", "sample_rate": 16000}
    assert sent[-1] == {"type": "stream.end"}
    frames = [base64.b64decode(f) for f in sent[1:-1]]
    assert all(isinstance(f, bytes) for f in frames)
    # 100 ms frames (the last one part-filled), all of it sent, nothing before the start
    assert {len(f) for f in frames[:-1]} == {3200}, {len(f) for f in frames}
    audio = np.frombuffer(b"".join(frames), "<i2").astype(np.float64) / 32768
    assert audio.size >= seconds * 16000
    assert status.startswith(f"Sent {audio.size / 16000:.1f} s"), status
    # the clip itself, at 16 kHz: resampled by the page from the audio device's rate
    # (piece by piece: under load the fake device's audio thread can drop a few
    # milliseconds, which shifts the rest; a wrong rate or a missing filter spoils every
    # piece)
    found = windows_found(pcm_of(CLIP), audio)
    similarities = sorted(s for _, s, _ in found)
    assert len(found) >= 5 and similarities[len(found) // 2] > 0.95, (similarities, rate)
    assert sum(s > 0.9 for s in similarities) >= 0.75 * len(found), (similarities, rate)
    # in order, where the microphone played them (the device starts playing a little
    # before the page's capture is connected: some of the silence in front may be missed)
    starts = [lag for _, s, lag in found if s > 0.9]
    assert starts == sorted(starts), found
    offset, _, lag = next(f for f in found if f[1] > 0.9)
    assert -0.02 <= (lag - offset) / 16000 <= BEFORE + 0.02, found


SHOWN = """
window.shown = [];
new MutationObserver(() => {
  const t = document.querySelector('.request .transcript.live');
  if (!t) return;
  const part = (name) => {
    const el = t.querySelector('.' + name);
    return el ? [el.textContent, getComputedStyle(el).color, getComputedStyle(el).fontWeight]
      : null;
  };
  const rec = { at: live.captured / 16000, text: t.textContent,
                committed: part('committed'), tentative: part('tentative') };
  if (shown.length === 0 || shown.at(-1).text !== rec.text) shown.push(rec);
}).observe(document.getElementById('requests'),
           { subtree: true, childList: true, characterData: true });
"""
"""Every change of the live transcript: the audio position the page had captured when it
changed, its text, and its committed and tentative parts (text, colour, weight)."""

KEEP_FRAMES = """
window.frames = []; const sendFrame_ = WebSocket.prototype.send;
WebSocket.prototype.send = function (d) {
  if (typeof d !== 'string') frames.push(btoa(String.fromCharCode(...new Uint8Array(d))));
  return sendFrame_.call(this, d);
};
"""
"""Keeps the audio frames the page sends (base64)."""

TIMELINE = """
window.timeline = []; const handle = onMessage;
onMessage = (m) => {
  if (m.type.startsWith('stream.') || m.type.startsWith('transcript.'))
    timeline.push([m.type, live.captured / 16000, Math.round(performance.now()),
                   m.committed ?? m.text, m.tentative]);
  handle(m);
};
"""
"""The live messages the page handled: type, captured audio position, page time (ms), text
(what a failed timing assertion shows)."""

FG, MUTED = "rgb(29, 36, 48)", "rgb(107, 116, 132)"
"""style.css: --fg, --muted."""


async def test_words_appear_on_the_demo_page_while_they_are_spoken(
    nc: NATS, streams: None, settings: Settings, pg_settings: Settings,
    workspace: WorkspaceFactory, model_cache: Path, tmp_path: Path,
) -> None:
    cfg = gateway_settings(pipeline_settings(settings, model_cache), wait_timeout=120.0)
    cfg = cfg.model_copy(update={"reason": cfg.reason.model_copy(update={"max_tokens": 24})})
    cfg = cfg.model_copy(update={
        "database_url": pg_settings.database_url, "master_keys": pg_settings.master_keys,
    })
    _, api_key = await workspace("demo-live")
    # 9 s of speech: room for the decodes of a busy machine (they run at most every second
    # of new audio, each taking from 0.5 s on an idle machine to several on a loaded one)
    spoken_until, reference = spoken(["en08.wav", "en04.wav"], tmp_path / "mic.wav")
    fake_mic = tmp_path / "mic.wav"
    async with stages(cfg), serving(cfg) as gw, chromium(
        gw.url + "/", tmp_path / "profile", fake_mic
    ) as page:
        await page.call("Emulation.setDeviceMetricsOverride", width=900, height=800,
                        deviceScaleFactor=1, mobile=False)
        await page.js(SHOWN)
        await page.js(TIMELINE)
        await page.js(KEEP_FRAMES)
        await page.js(f"document.getElementById('api-key').value = {json.dumps(api_key)};"
                      "document.getElementById('start').click();"
                      "document.getElementById('language').value = 'en'")
        await page.wait_for("document.getElementById('status').textContent"
                            ".startsWith('Connected')")
        shots = Shots(page)
        # push-to-talk: hold the button while the clip plays, let go just after its speech
        await press(page, "#talk", "mousePressed")
        try:
            await shots.wait_for(f"live.captured >= {int((spoken_until + 0.3) * 16000)}", 30)
        finally:
            await press(page, "#talk", "mouseReleased")
        try:
            await shots.wait_for("!!document.querySelector('.request.done')", timeout=180)
        except TimeoutError:
            raise AssertionError(await page.js("JSON.stringify(state.log)")) from None
        shown = await page.js("shown")
        timeline = await page.js("timeline")
        frames = await page.js("frames")
        cards = await page.js(
            "Object.values(state.cards).map(c => ({meta: c.el.querySelector('.meta').textContent,"
            " transcript: c.el.querySelector('.transcript').textContent, streamed: c.answer,"
            " answer: c.el.querySelector('.answer').textContent}))")
        await page.screenshot(SCREENSHOT)
    partials = [s for s in shown if s["committed"] is not None]
    sent = b"".join(base64.b64decode(f) for f in frames)
    SENT.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(SENT), "wb") as out:  # what the server heard, for a failure's reader
        out.setnchannels(1), out.setsampwidth(2), out.setframerate(16000)
        out.writeframes(sent)
    # the speech as the page sent it, half-second piece by piece: a starved browser's audio
    # thread drops or blurs a few milliseconds here and there (the page's own audio path is
    # checked sample by sample by the test above, on a fake socket)
    heard = windows_found(pcm_of(fake_mic), np.frombuffer(sent, "<i2") / 32768)
    blurred = sum(similarity <= 0.9 for _, similarity, _ in heard)
    assert blurred <= len(heard) // 2, heard
    # committed words only grow, in the page's normal colour; tentative ones are greyed
    committed = [s["committed"][0] for s in partials]
    assert all(b.startswith(a) for a, b in zip(committed, committed[1:], strict=False)), shown
    assert {tuple(s["committed"][1:]) for s in partials if s["committed"][0]} == {(FG, "400")}
    assert {s["tentative"][1] for s in partials if s["tentative"][0]} == {MUTED}
    # one utterance: its final transcript is the clip's words, and its answer streamed in
    assert len(cards) == 1, cards
    (card,) = cards
    assert card["meta"].startswith("live utterance 0"), card
    # within the 15 % word error rate of the file pipeline's test, and one more word for
    # each blurred half second of what was heard ("favourite" comes back "favorite":
    # one of the 28 words is gone before anything is misheard)
    allowed = len(reference) * 15 // 100 + blurred
    assert edits(words(card["transcript"]), reference) <= allowed, (
        card["transcript"], heard)
    assert card["streamed"] == card["answer"] and card["answer"].strip(), card
    assert SCREENSHOT.stat().st_size > 10_000
    # words of the clip were on the page before its speech ended (with a frame to spare:
    # the page counts audio a frame after the microphone plays it)
    first = next((s for s in partials if set(words(s["text"])) & set(reference)), None)
    assert first is not None and first["at"] + 0.1 < spoken_until, "\n".join(
        [f"speech ends at {spoken_until:.2f} s; the page's live messages:"]
        + [json.dumps(t) for t in timeline])


ARTIFACTS = Path(__file__).resolve().parents[2] / "tests" / "artifacts"
SCREENSHOT = ARTIFACTS / "demo_live.png"
"""The page at the end (saved by every run; git-ignored)."""
SENT = ARTIFACTS / "demo_live_sent.wav"
"""The audio the page sent in the last run."""
PARTIAL_SCREENSHOT = ARTIFACTS / "demo_live_partial.png"
"""The page showing committed and greyed tentative words, when a run catches one."""


class Shots:
    """``Page.wait_for`` that also takes the partial screenshot the first time the page
    shows committed and tentative words together."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.taken = False

    async def wait_for(self, expression: str, timeout: float) -> None:
        both = ("(() => { const t = document.querySelector('.transcript.live');"
                " return !!t && !!t.querySelector('.committed')?.textContent"
                " && !!t.querySelector('.tentative')?.textContent; })()")
        async with asyncio.timeout(timeout):
            while not await self.page.js(expression):
                if not self.taken and await self.page.js(both):
                    await self.page.screenshot(PARTIAL_SCREENSHOT)
                    self.taken = True
                await asyncio.sleep(0.1)

"""Helpers of the demo page's live tests: audio comparisons, real mouse presses over the
DevTools protocol, the page's files served alone, and the fake microphone's speech."""

from __future__ import annotations

import contextlib
import json
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
from aiohttp import web

from mumu.gateway.app import STATIC
from mumu.runtime.http import serve
from tests.gateway.cdp import Page
from tests.gateway.pipeline import SPEECH
from tests.text import words

BEFORE = 0.5
"""Silence before the speech on the fake microphone."""


def pcm_of(path: Path) -> np.ndarray:
    """The wav's 16-bit samples as floats in [-1, 1]."""
    raw = path.read_bytes()
    data = raw[raw.index(b"data") + 8:]
    return np.frombuffer(data[: len(data) // 2 * 2], "<i2").astype(np.float64) / 32768


def best_correlation(a: np.ndarray, b: np.ndarray) -> tuple[float, int]:
    """The normalised cross-correlation of ``a`` and ``b`` at their best lag, and the lag
    (in samples of ``b`` after ``a``)."""
    n = 1 << int(np.ceil(np.log2(a.size + b.size)))
    xc = np.fft.irfft(np.fft.rfft(b, n) * np.conj(np.fft.rfft(a, n)), n)
    lag = int(np.argmax(np.abs(xc)))
    shift = lag if lag <= n - a.size else lag - n  # negative lags wrap to the end
    x, y = (a, b[shift:]) if shift >= 0 else (a[-shift:], b)
    m = min(x.size, y.size)
    x, y = x[:m], y[:m]
    return float(abs(np.dot(x, y)) / np.sqrt(np.dot(x, x) * np.dot(y, y))), shift


def windows_found(a: np.ndarray, b: np.ndarray,
                  window: int = 8000) -> list[tuple[int, float, int]]:
    """Each voiced ``window``-sample piece of ``a`` found in ``b`` on its own: where it
    starts in ``a``, its similarity at its best lag, and where in ``b`` it starts. A starved browser's audio
    thread can drop or repeat a few milliseconds, which shifts all that follows: pieces
    found one by one still match where one lag for the whole clip would not."""
    loud = float(np.max(np.abs(a)))
    found = []
    for start in range(0, a.size - window + 1, window):
        piece = a[start:start + window]
        if float(np.max(np.abs(piece))) > loud / 4:
            similarity, lag = best_correlation(piece, b)
            found.append((start, similarity, lag))
    return found


async def press(page: Page, selector: str, kind: str) -> None:
    """A real mouse ``kind`` ("mousePressed" / "mouseReleased") on the element's centre."""
    x, y = await page.js(f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
                         ".getBoundingClientRect(); return [r.x + r.width / 2,"
                         " r.y + r.height / 2]; })()")
    await page.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left",
                    buttons=1 if kind == "mousePressed" else 0, clickCount=1)


async def click(page: Page, selector: str) -> None:
    await press(page, selector, "mousePressed")
    await press(page, selector, "mouseReleased")


@contextlib.asynccontextmanager
async def static_site() -> AsyncIterator[str]:
    """The demo page's files alone (no gateway): its URL."""
    async def index(_: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html")

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_static("/static", STATIC)
    runner, port = await serve(app, "127.0.0.1", 0, None)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def edits(a: list[str], b: list[str]) -> int:
    """Word-level edit distance."""
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


def speech(audio: np.ndarray) -> tuple[int, int]:
    """Where the speech starts and ends (20 ms windows above 2 % of the loudest), in samples."""
    win = 320
    rms = np.sqrt(np.mean(audio[: audio.size // win * win].reshape(-1, win) ** 2, axis=1))
    loud = np.nonzero(rms > 0.02 * rms.max())[0]
    return int(loud[0] * win), int((loud[-1] + 1) * win)


def spoken(names: list[str], out: Path) -> tuple[float, list[str]]:
    """The clips' speech said as one utterance (0.25 s between them), after 0.5 s of silence
    and before 1.5 s, as a wav for the fake microphone: where the speech ends (seconds) and
    the words said."""
    refs = json.loads((SPEECH / "references.json").read_text())
    parts, said = [np.zeros(int(BEFORE * 16000))], []
    for name in names:
        audio = pcm_of(SPEECH / name)
        start, end = speech(audio)
        parts += [audio[start:end], np.zeros(4000)]
        said += words(refs[name]["text"])
    ends = sum(p.size for p in parts) - 4000
    parts.append(np.zeros(int(1.5 * 16000)))
    with wave.open(str(out), "wb") as mic:
        mic.setnchannels(1), mic.setsampwidth(2), mic.setframerate(16000)
        mic.writeframes((np.concatenate(parts) * 32767).astype("<i2").tobytes())
    return ends / 16000, said

"""Acceptance: after a spoken question ran through the pipeline on a store encrypted at
rest, the raw files of the JetStream store hold none of its words (and without the cipher
they do, so the scan can fail)."""

from __future__ import annotations

import re
import secrets
from pathlib import Path

import nats
import pytest

from mumu.broker.embedded import Cipher, EmbeddedNats
from mumu.broker.streams import apply_all
from mumu.contracts import headers as h
from mumu.contracts.events import AnswerFinal, TranscriptFinal
from mumu.settings import NatsSettings, Settings, StageRuntimeSettings
from tests.audio.conftest import SPEECH, publish_audio
from tests.gateway.pipeline import pipeline_settings, stages
from tests.harness import Collector

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def long_words(text: str) -> set[str]:
    """The words of four letters or more, lower case."""
    return set(re.findall(r"[^\W\d_]{4,}", text.lower()))


CONTEXT = 3
PRINTABLE = re.compile(rb"[\x20-\x7e]*")


def readable_at(data: bytes, word: bytes) -> bool:
    """``word`` occurs in ``data`` with printable bytes around it (as in JSON, text).

    Ciphertext is uniform: a four-letter word matches it by chance about once in 3e8
    positions (case-insensitively), which over the store's hundreds of kilobytes and a
    dozen words would be a rare false alarm; printable neighbours on both sides make
    that about 400 times rarer still, and plaintext always has them.
    """
    start = data.find(word)
    while start != -1:
        around = data[max(0, start - CONTEXT):start] + data[start + len(word):][:CONTEXT]
        if PRINTABLE.fullmatch(around):
            return True
        start = data.find(word, start + 1)
    return False


def found_in(store: Path, words: set[str]) -> dict[str, list[str]]:
    """word → the raw files (relative to ``store``) that contain it, case-insensitively."""
    hits: dict[str, list[str]] = {}
    for path in sorted(p for p in store.rglob("*") if p.is_file()):
        data = path.read_bytes().lower()
        for word in words:
            if readable_at(data, word.encode()):
                hits.setdefault(word, []).append(str(path.relative_to(store)))
    return hits


async def ask_by_voice(server: EmbeddedNats, tmp_path: Path, model_cache: Path) -> tuple[str, str]:
    """en05.wav through ingest, transcribe and reason; (transcript, answer)."""
    base = Settings(
        data_dir=tmp_path / "mumu", nats=NatsSettings(url=server.url),
        stage=StageRuntimeSettings(backoff=[0.2, 0.4, 0.8], max_deliver=3, drain_timeout=5.0,
                                   fetch_timeout=0.2),
    )
    cfg = pipeline_settings(base, model_cache)
    cfg = cfg.model_copy(update={"reason": cfg.reason.model_copy(update={"max_tokens": 40})})
    nc = await nats.connect(server.url)
    try:
        await apply_all(nc)
        async with stages(cfg), Collector(nc) as seen:
            rid = await publish_audio(nc, (SPEECH / "en05.wav").read_bytes(), ws="ws-rest")
            (answer,) = await seen.wait_count("mumu.answer.final.", 1, timeout=240)
        (transcript,) = seen.on("mumu.transcript.final.")
        live = seen.on("mumu.transcript.partial.") + seen.on("mumu.answer.delta.")
        assert len(live) >= 2  # segments and answer chunks, as the real stages publish them
        assert {m.headers.get(h.TTL) for m in live} == {str(cfg.stage.live_ttl)}
        assert h.TTL not in transcript.headers and h.TTL not in answer.headers
    finally:
        await nc.drain()
    final = TranscriptFinal.model_validate_json(transcript.data)
    reply = AnswerFinal.model_validate_json(answer.data)
    assert final.request_id == reply.request_id == rid
    return final.text, reply.text


@pytest.mark.parametrize("cipher", ["chachapoly", None])
async def test_the_store_holds_no_word_of_the_run_when_encrypted(
    tmp_path: Path, model_cache: Path, cipher: Cipher | None
) -> None:
    key = secrets.token_urlsafe(32) if cipher else None
    server = EmbeddedNats(tmp_path / "nats", cipher=cipher, key=key)
    await server.start()
    try:
        transcript, answer = await ask_by_voice(server, tmp_path, model_cache)
    finally:
        await server.stop()
    assert {"capital", "city", "people"} <= long_words(transcript), transcript
    words = long_words(transcript) | long_words(answer)
    hits = found_in(server.store_dir, words)
    size = sum(p.stat().st_size for p in server.store_dir.rglob("*") if p.is_file())
    print(f"store {size} bytes, {len(words)} words: {sorted(words)}; found {hits}; {answer!r}")
    if cipher:
        assert hits == {}, "plaintext in the encrypted store"
    else:  # the same scan finds the transcript in a store without the cipher
        assert long_words(transcript) <= hits.keys(), hits

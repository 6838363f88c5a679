"""The ingest handler in memory (``Inbound.of``): no NATS server, a real decode.

The Object Store is the stage's collaborator: a dict stands in for it here. Every
behaviour is also covered end to end on a real server in ``test_ingest.py``.
"""

from __future__ import annotations

import io
import wave

import pytest

from mumu.contracts import headers as h
from mumu.contracts.events import AudioReady, new_id
from mumu.db.owned_pool import OwnedPool
from mumu.runtime import Inbound, PermanentError
from mumu.stages.ingest.settings import IngestSettings
from mumu.stages.ingest.stage import IngestStage
from mumu.stages.ingest.workspaces import WorkspaceGate
from tests.audio.conftest import SPEECH

WS = "ws-mem"


class Objects:
    """What ingest needs of an Object Store to store normalised audio."""

    def __init__(self) -> None:
        self.stored: dict[str, bytes] = {}

    async def put(self, name: str, data: bytes) -> None:
        self.stored[name] = data


def stage(store: Objects, **settings: object) -> IngestStage:
    gate = WorkspaceGate(OwnedPool(None), cache_seconds=60)  # no database: any workspace
    return IngestStage(IngestSettings(**settings), gate, store)  # type: ignore[arg-type]


def audio(data: bytes, ws: str = WS, **headers: str) -> Inbound[AudioReady]:
    rid = new_id()
    return Inbound.of(data, subject=f"mumu.ingest.audio.{ws}", headers={
        h.CONTENT_TYPE: "audio/wav", h.SESSION: "s1", h.REQUEST_ID: rid, **headers})


async def test_speech_becomes_16k_mono_wav_and_an_audio_ready_event() -> None:
    store = Objects()
    inbound = audio((SPEECH / "en01.wav").read_bytes(), **{h.LANGUAGE: "en"})
    (out,) = await stage(store).handle(inbound)
    ready = AudioReady.model_validate_json(out.payload)
    assert out.subject == f"mumu.audio.ready.{WS}"
    assert ready.request_id == inbound.request_id
    assert ready.options.language == "en"
    with wave.open(io.BytesIO(store.stored[ready.object_name])) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16_000, 1, 2)
        assert abs(w.getnframes() / 16_000 - ready.duration) < 0.01
    assert 3.9 < ready.duration < 4.3


@pytest.mark.parametrize(("inbound", "code"), [
    (audio(b"RIFF" + b"\0" * 100), "unsupported_audio"),
    (audio(b"x" * 2_000, ws="bad$token"), "schema_violation"),
    (Inbound.of(b"x", subject=f"mumu.ingest.audio.{WS}", headers={h.SESSION: "s"}),
     "missing_header"),
], ids=["not audio", "bad workspace token", "no request id"])
async def test_bad_input_is_a_permanent_error_with_its_code(
    inbound: Inbound[AudioReady], code: str
) -> None:
    store = Objects()
    with pytest.raises(PermanentError) as caught:
        await stage(store).handle(inbound)
    assert caught.value.code == code
    assert store.stored == {}


async def test_audio_over_the_byte_limit_is_too_large() -> None:
    store = Objects()
    with pytest.raises(PermanentError) as caught:
        await stage(store, max_bytes=1_000).handle(audio(b"x" * 1_001))
    assert caught.value.code == "too_large"

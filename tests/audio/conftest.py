"""Fixtures of the audio tests: settings with a shared model cache, stages, publishing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from mumu.contracts import headers as h
from mumu.contracts import subjects
from mumu.contracts.events import new_id
from mumu.settings import Settings
from mumu.stages.ingest.stage import IngestStage
from mumu.stages.ingest.stage import build_stage as build_ingest
from mumu.stages.transcribe.settings import TranscribeSettings
from mumu.stages.transcribe.stage import TranscribeStage
from mumu.stages.transcribe.stage import build_stage as build_transcribe
from tests.conftest import provision
from tests.harness import running
from tests.text import words as word_list

DATA = Path(__file__).parents[1] / "data"
SPEECH = DATA / "speech"
WS = "ws-audio"


def references() -> dict[str, dict[str, str]]:
    refs: dict[str, dict[str, str]] = json.loads((SPEECH / "references.json").read_text())
    return refs


def words(text: str) -> str:
    """Lower-cased, punctuation stripped (the WER normalisation of the issue), as one
    string."""
    return " ".join(word_list(text))


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One reassembled model for the whole run (the first start builds it)."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture
def audio_settings(settings: Settings, model_cache: Path) -> Settings:
    return settings.model_copy(
        update={
            "transcribe": TranscribeSettings(model_cache_dir=model_cache, cpu_threads=2),
            "stage": settings.stage.model_copy(update={"ack_wait": 10.0}),
        }
    )


@pytest.fixture
async def pipeline(
    nc: NATS, streams: None, audio_settings: Settings
) -> AsyncIterator[tuple[IngestStage, TranscribeStage]]:
    """Ingest and transcribe consuming on the test server, in this event loop."""
    ingest = build_ingest(audio_settings)
    transcribe = build_transcribe(audio_settings)
    async with running(ingest, audio_settings), running(transcribe, audio_settings):
        yield ingest, transcribe


async def publish_audio(
    nc: NATS, data: bytes, *, content_type: str = "audio/wav", ws: str = WS,
    request_id: str | None = None, extra: dict[str, str] | None = None,
    omit: tuple[str, ...] = (),
) -> str:
    """What a producer does with plain nats-py: raw bytes plus the contract headers."""
    rid = request_id or new_id()
    headers = {
        h.CONTENT_TYPE: content_type,
        h.SESSION: "sess-1",
        h.REQUEST_ID: rid,
        h.MSG_ID: f"{ws}.{rid}",  # as producers are told: the workspace keeps tenants apart
        **(extra or {}),
    }
    for name in omit:
        headers.pop(name, None)
    await provision(nc, ws)
    await nc.jetstream().publish(subjects.INGEST_AUDIO.for_workspace(ws), data, headers=headers)
    return rid


Upload = Callable[..., Awaitable[None]]


@pytest.fixture
def upload(nc: NATS, workspaces: Callable[..., Awaitable[None]]) -> Upload:
    """``await upload(name, data, ws=WS)``: what a producer does with large audio, put it
    in its (provisioned) workspace's upload bucket."""

    async def put(name: str, data: bytes, ws: str = WS) -> None:
        await workspaces(ws)
        store = await nc.jetstream().object_store(subjects.upload_bucket(ws))
        await store.put(name, data)

    return put

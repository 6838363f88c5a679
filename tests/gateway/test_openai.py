"""The official ``openai`` client against /v1/audio/transcriptions (ingest → transcribe)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import openai
import pytest
from nats.aio.client import Client as NATS

from mumu.contracts.events import TranscriptFinal
from mumu.contracts.ids import is_id
from mumu.settings import Settings
from tests.gateway.conftest import gateway_settings, serving
from tests.gateway.pipeline import SPEECH, pipeline_settings, stages
from tests.harness import Collector
from tests.pg_fixtures import WorkspaceFactory
from tests.text import split_words

pytestmark = pytest.mark.timeout(240)
TIMESTAMP = re.compile(r"(\d\d):(\d\d):(\d\d)[,.](\d{3}) --> (\d\d):(\d\d):(\d\d)[,.](\d{3})")


async def test_openai_client_gets_the_transcript_in_every_format(
    nc: NATS, streams: None, settings: Settings, pg_settings: Settings,
    workspace: WorkspaceFactory, model_cache: Path,
) -> None:
    cfg = gateway_settings(pipeline_settings(settings, model_cache), wait_timeout=120.0)
    cfg = cfg.model_copy(update={"database_url": pg_settings.database_url})
    _, api_key = await workspace("openai")
    clip = SPEECH / "en02.wav"
    expected = split_words("Please send the quarterly report to the finance team by Friday.")
    async with stages(cfg, reason=False), serving(cfg) as gw, Collector(nc, "mumu.transcript.final.>") as finals:
        client = openai.AsyncOpenAI(base_url=f"{gw.url}/v1", api_key=api_key, max_retries=0)
        tx = client.audio.transcriptions
        as_json = await tx.create(model="whisper-1", file=clip.open("rb"))
        as_text = await tx.create(model="whisper-1", file=clip.open("rb"), response_format="text")
        as_srt = await tx.create(model="whisper-1", file=clip.open("rb"), response_format="srt")
        as_vtt = await tx.create(model="whisper-1", file=clip.open("rb"), response_format="vtt")
        verbose = await tx.create(
            model="whisper-1", file=clip.open("rb"), response_format="verbose_json",
            timestamp_granularities=["segment"], language="en",
        )
        worded = await tx.create(
            model="whisper-1", file=clip.open("rb"), response_format="verbose_json",
            timestamp_granularities=["word", "segment"],
        )
        with pytest.raises(openai.AuthenticationError):
            await openai.AsyncOpenAI(
                base_url=f"{gw.url}/v1", api_key="mumu_not_a_key", max_retries=0
            ).audio.transcriptions.create(model="whisper-1", file=clip.open("rb"))
        with pytest.raises(openai.APIStatusError) as bad:
            await tx.create(model="whisper-1", file=("x.wav", b"not audio at all"))
        assert bad.value.status_code == 415
        # the form is read into its model: a precise 400 naming what is wrong
        with pytest.raises(openai.BadRequestError) as words_need_verbose:
            await tx.create(model="whisper-1", file=clip.open("rb"),
                            timestamp_granularities=["word"])
        with pytest.raises(openai.BadRequestError) as unknown_language:
            await tx.create(model="whisper-1", file=clip.open("rb"), language="English")
    body: Any = words_need_verbose.value.body
    refused = dict(body)
    assert is_id(refused.pop("request_id"))
    assert refused == {
        "code": "invalid_request_error",
        "message": "word timestamps need response_format=verbose_json"}
    unknown: Any = unknown_language.value.body
    assert unknown["code"] == "invalid_request_error"
    assert unknown["message"].startswith("language: String should match pattern")
    # transcriptions are marked transcribe-only: the reason stage will not answer them
    assert finals.messages
    assert all(TranscriptFinal.model_validate_json(m.data).answer is False for m in finals.messages)
    assert split_words(as_json.text) == expected
    assert split_words(str(as_text)) == expected
    srt, vtt = str(as_srt), str(as_vtt)
    assert srt.startswith("1\n")
    srt_stamp, vtt_stamp = TIMESTAMP.search(srt), TIMESTAMP.search(vtt)
    assert srt_stamp and "," in srt_stamp[0]
    assert vtt.startswith("WEBVTT")
    assert vtt_stamp and "." in vtt_stamp[0]
    assert split_words(" ".join(line for line in srt.splitlines()
                                if line and not line.isdigit() and "-->" not in line)) == expected
    assert split_words(verbose.text) == expected
    assert verbose.language == "en"
    assert verbose.duration
    assert verbose.duration > 1.0
    assert verbose.segments
    assert verbose.segments[0].start >= 0.0
    assert verbose.segments[-1].end <= verbose.duration + 0.5
    assert all(s.end > s.start for s in verbose.segments)
    assert worded.words
    assert [w.word.strip(" .,").lower() for w in worded.words][:3] == ["please", "send", "the"]
    assert all(w.end >= w.start for w in worded.words)


async def test_openai_client_translates_to_english_and_lists_the_models(
    nc: NATS, streams: None, settings: Settings, pg_settings: Settings,
    workspace: WorkspaceFactory, model_cache: Path,
) -> None:
    cfg = gateway_settings(pipeline_settings(settings, model_cache), wait_timeout=120.0)
    cfg = cfg.model_copy(update={"database_url": pg_settings.database_url})
    ws, api_key = await workspace("openai-translate")
    async with stages(cfg, reason=False), serving(cfg) as gw, \
            Collector(nc, f"mumu.transcript.final.{ws}") as finals:
        client = openai.AsyncOpenAI(base_url=f"{gw.url}/v1", api_key=api_key, max_retries=0)
        listed = await client.models.list()
        assert [m.id for m in listed.data] == ["whisper-1", cfg.transcribe.model]
        assert all(m.object == "model" and m.owned_by == "mumu" for m in listed.data)
        # German speech, English text: the task reached the model
        german = await client.audio.translations.create(
            model="whisper-1", file=(SPEECH / "de01.wav").open("rb"))
        verbose = await client.audio.translations.create(
            model="whisper-1", file=(SPEECH / "de01.wav").open("rb"),
            response_format="verbose_json")
        with pytest.raises(openai.AuthenticationError):
            await openai.AsyncOpenAI(base_url=f"{gw.url}/v1", api_key="mumu_wrong",
                                     max_retries=0).models.list()
    text = split_words(german.text)
    assert {"good", "morning"} <= set(text), german.text  # "Guten Morgen, wie geht es dir"
    assert not {"guten", "morgen"} & set(text), german.text
    assert getattr(verbose, "task", None) == "translate"
    assert [TranscriptFinal.model_validate_json(m.data).task for m in finals.messages] == [
        "translate", "translate"]


async def test_openai_client_streams_a_transcription_as_deltas_then_done(
    nc: NATS, streams: None, settings: Settings, pg_settings: Settings,
    workspace: WorkspaceFactory, model_cache: Path,
) -> None:
    cfg = gateway_settings(pipeline_settings(settings, model_cache), wait_timeout=120.0)
    cfg = cfg.model_copy(update={"database_url": pg_settings.database_url})
    ws, api_key = await workspace("openai-stream")
    async with stages(cfg, reason=False), serving(cfg) as gw, \
            Collector(nc, f"mumu.transcript.partial.{ws}") as partials:
        client = openai.AsyncOpenAI(base_url=f"{gw.url}/v1", api_key=api_key, max_retries=0)
        stream = await client.audio.transcriptions.create(
            model="whisper-1", file=(SPEECH / "long_en.flac").open("rb"), stream=True)
        events = [event async for event in stream]
        with pytest.raises(openai.BadRequestError):
            await client.audio.transcriptions.create(
                model="whisper-1", file=(SPEECH / "en01.wav").open("rb"), stream=True,
                response_format="srt")
        # audio the pipeline cannot decode is refused with its own status, as without
        # stream (not a 200 whose stream holds only the error)
        with pytest.raises(openai.APIStatusError) as undecodable:
            await client.audio.transcriptions.create(
                model="whisper-1", file=("clip.wav", b"fLaC", "audio/wav"), stream=True)
    assert (undecodable.value.status_code, undecodable.value.code) == (415, "unsupported_audio")
    kinds = [e.type for e in events]
    assert kinds[-1] == "transcript.text.done" and kinds.count("transcript.text.done") == 1
    deltas = [e.delta for e in events if e.type == "transcript.text.delta"]
    assert len(deltas) >= 2, "one delta per decoded segment, as they were decoded"
    assert len(deltas) == len(partials.messages)
    assert "".join(deltas) == events[-1].text
    assert {"meeting", "budget", "hiring"} <= set(split_words(events[-1].text))

"""Ingest on a real nats-server: every container decodes, every bad file gets its code."""

from __future__ import annotations

import asyncio
import io
import json
import time
import wave

import jiwer
import nats.js.errors
from nats.aio.client import Client as NATS

from mumu.contracts import headers as h
from mumu.contracts import subjects
from mumu.contracts.events import AudioReady, PipelineError, TranscriptFinal, new_id
from mumu.settings import Settings
from mumu.stages.ingest.stage import IngestStage
from mumu.stages.ingest.stage import build_stage as build_ingest
from mumu.stages.transcribe.stage import TranscribeStage
from tests.audio.conftest import DATA, WS, Upload, publish_audio, references, words
from tests.harness import Collector, Seen, running

FORMATS = {
    "en01_truncated.wav": "audio/wav",  # cut in the middle of its samples: the first half
    "en01.flac": "audio/flac",
    "en01.mp3": "audio/mpeg",
    "en01.ogg": "audio/ogg",
    "en01.webm": "audio/webm",
    "en01.m4a": "audio/mp4",
    "en01_8k.wav": "audio/wav",
}


def error_of(seen: Seen) -> PipelineError:
    return PipelineError.model_validate_json(seen.data)


async def read_object(nc: NATS, name: str, ws: str = WS) -> bytes:
    """Normalised audio, from the workspace's own bucket."""
    store = await nc.jetstream().object_store(subjects.audio_bucket(ws))
    return (await store.get(name)).data or b""


async def test_every_container_becomes_16k_mono_audio_in_the_object_store(
    nc: NATS, streams: None, settings: Settings
) -> None:
    async with running(build_ingest(settings), settings), Collector(nc) as seen:
        sent = {
            await publish_audio(nc, (DATA / "formats" / name).read_bytes(), content_type=ct,
                                extra={h.LANGUAGE: "en", h.WORD_TIMESTAMPS: "true"}): name
            for name, ct in FORMATS.items()
        }
        out = await seen.wait_count("mumu.audio.ready.", len(FORMATS), timeout=30)
        for msg in out:
            ready = AudioReady.model_validate_json(msg.data)
            assert msg.subject == f"mumu.audio.ready.{WS}"
            assert ready.request_id in sent
            assert ready.sample_rate == 16_000
            full = 3.9 < ready.duration < 4.3
            half = 1.95 < ready.duration < 2.15
            assert half if "truncated" in sent[ready.request_id] else full, ready.duration
            assert ready.options.language == "en"
            assert ready.options.word_timestamps is True
            assert ready.source_content_type == FORMATS[sent[ready.request_id]]
            with wave.open(io.BytesIO(await read_object(nc, ready.object_name))) as w:
                assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16_000, 1, 2)
                assert abs(w.getnframes() / 16_000 - ready.duration) < 0.01
    assert not seen.on("mumu.dlq.")


async def test_bad_files_get_their_code_one_dead_letter_and_the_consumer_keeps_flowing(
    nc: NATS, streams: None, settings: Settings
) -> None:
    expected: dict[str, str] = json.loads((DATA / "bad" / "expected.json").read_text())
    good = (DATA / "speech" / "en01.wav").read_bytes()
    async with running(build_ingest(settings), settings), Collector(nc) as seen:
        codes = {}
        for name, code in expected.items():
            rid = await publish_audio(nc, (DATA / "bad" / name).read_bytes())
            codes[rid] = code
        good_id = await publish_audio(nc, good)
        await seen.wait_count("mumu.audio.ready.", 1, timeout=30)
        errors = await seen.wait_count("mumu.error.", len(expected), timeout=30)
        letters = await seen.wait_count("mumu.dlq.", len(expected), timeout=30)
    got = {e.request_id: e.code for e in map(error_of, errors)}
    assert got == codes
    assert len(letters) == len(expected)  # exactly one dead letter each
    rid_header = h.DLQ_ORIGINAL_PREFIX + h.REQUEST_ID
    assert {m.headers[rid_header]: m.headers[h.DLQ_CODE] for m in letters} == codes
    assert all(m.subject == subjects.DLQ.stage("ingest").for_workspace(
        subjects.last_token(m.headers[h.DLQ_SUBJECT])) for m in letters)
    ready = AudioReady.model_validate_json(seen.on("mumu.audio.ready.")[0].data)
    assert ready.request_id == good_id


async def test_missing_and_invalid_headers(nc: NATS, streams: None, settings: Settings) -> None:
    audio = (DATA / "speech" / "en01.wav").read_bytes()
    async with running(build_ingest(settings), settings), Collector(nc) as seen:
        no_session = await publish_audio(nc, audio, omit=(h.SESSION,))
        no_type = await publish_audio(nc, audio, omit=(h.CONTENT_TYPE,))
        bad_beam = await publish_audio(nc, audio, extra={h.BEAM_SIZE: "99"})
        errors = await seen.wait_count("mumu.error.", 3)
        await seen.wait_count("mumu.dlq.", 3)
    by_id = {e.request_id: e for e in (PipelineError.model_validate_json(m.data) for m in errors)}
    assert by_id[no_session].code == "missing_header"
    assert "Mumu-Session" in by_id[no_session].message
    assert by_id[no_type].code == "missing_header"
    assert "Content-Type" in by_id[no_type].message
    assert by_id[bad_beam].code == "schema_violation"


async def test_size_and_duration_limits(nc: NATS, streams: None, settings: Settings) -> None:
    limited = settings.model_copy(
        update={"ingest": settings.ingest.model_copy(update={"max_bytes": 100_000,
                                                             "max_duration": 4.5})}
    )
    async with running(build_ingest(limited), limited), Collector(nc) as seen:
        big = await publish_audio(nc, (DATA / "speech" / "en04.wav").read_bytes())  # 167 kB
        long = await publish_audio(nc, (DATA / "formats" / "en01.m4a").read_bytes())  # 4.1 s ok
        too_long = await publish_audio(nc, (DATA / "speech" / "long_en.flac").read_bytes()[:90_000])
        errors = await seen.wait_count("mumu.error.", 2, timeout=20)
        await seen.wait_count("mumu.audio.ready.", 1, timeout=20)
    by_id = {e.request_id: e.code for e in map(error_of, errors)}
    assert by_id == {big: "too_large", too_long: "too_long"}
    assert AudioReady.model_validate_json(seen.on("mumu.audio.ready.")[0].data).request_id == long


async def uploads_of(nc: NATS, ws: str) -> set[str]:
    store = await nc.jetstream().object_store(subjects.upload_bucket(ws))
    try:
        return {o.name for o in await store.list(ignore_deletes=True)}
    except nats.js.errors.NotFoundError:  # nothing in the bucket
        return set()


async def test_producer_upload_through_its_workspace_bucket_is_deleted_once_settled(
    nc: NATS, streams: None, settings: Settings, upload: Upload
) -> None:
    await upload("upload-1.flac", (DATA / "speech" / "long_en.flac").read_bytes())
    await upload("kept.flac", (DATA / "speech" / "long_en.flac").read_bytes())
    async with running(build_ingest(settings), settings), Collector(nc) as seen:
        ok = await publish_audio(nc, b"", content_type="audio/flac",
                                 extra={h.AUDIO_OBJECT: "upload-1.flac"})
        missing = await publish_audio(nc, b"", extra={h.AUDIO_OBJECT: "never-uploaded"})
        ready_msgs = await seen.wait_count("mumu.audio.ready.", 1, timeout=30)
        errors = await seen.wait_count("mumu.error.", 1, timeout=30)
        async with asyncio.timeout(10):  # deleted right after the ack
            while "upload-1.flac" in await uploads_of(nc, WS):
                await asyncio.sleep(0.05)
    ready = AudioReady.model_validate_json(ready_msgs[0].data)
    assert ready.request_id == ok
    assert 63 < ready.duration < 64
    # the normalised audio is in the service bucket; the upload is gone, others stay
    assert len(await read_object(nc, ready.object_name)) > 0
    assert await uploads_of(nc, WS) == {"kept.flac"}
    (error,) = map(error_of, errors)
    assert (error.request_id, error.code) == (missing, "unsupported_audio")
    assert f"not in bucket {subjects.upload_bucket(WS)}" in error.message


async def test_a_workspace_cannot_make_ingest_read_another_workspaces_upload(
    nc: NATS, streams: None, settings: Settings, upload: Upload, workspaces
) -> None:
    secret = (DATA / "speech" / "en01.wav").read_bytes()
    await workspaces("ws-thief")  # a real workspace, with a (different) bucket of its own
    await upload("secret.wav", secret, ws="ws-victim")
    await upload("ws-victim/secret.wav", secret, ws="ws-victim")
    async with running(build_ingest(settings), settings), Collector(nc) as seen:
        # A names B's object, by its name and by a path that spells B's workspace
        plain = await publish_audio(nc, b"", ws="ws-thief", extra={h.AUDIO_OBJECT: "secret.wav"})
        pathy = await publish_audio(nc, b"", ws="ws-thief",
                                    extra={h.AUDIO_OBJECT: "ws-victim/secret.wav"})
        errors = await seen.wait_count("mumu.error.ws-thief", 2, timeout=30)
        letters = await seen.wait_count("mumu.dlq.ingest", 2, timeout=30)
    by_id = {e.request_id: e for e in map(error_of, errors)}
    for rid, name in ((plain, "secret.wav"), (pathy, "ws-victim/secret.wav")):
        assert by_id[rid].code == "unsupported_audio"
        assert by_id[rid].message.startswith(
            f"object {name!r} is not in bucket mumu-upload-ws-thief, the upload bucket of "
            "workspace ws-thief")
    assert {m.headers[h.DLQ_REASON].split(",")[0] for m in letters} == {
        "object 'secret.wav' is not in bucket mumu-upload-ws-thief",
        "object 'ws-victim/secret.wav' is not in bucket mumu-upload-ws-thief"}
    assert not seen.on("mumu.audio.ready.")
    # B's uploads are untouched
    victim = await nc.jetstream().object_store(subjects.upload_bucket("ws-victim"))
    assert (await victim.get("secret.wav")).data == secret
    assert await uploads_of(nc, "ws-victim") == {"secret.wav", "ws-victim/secret.wav"}


async def test_two_workspaces_using_one_request_id_are_both_transcribed(
    nc: NATS, pipeline: tuple[IngestStage, TranscribeStage]
) -> None:
    """JetStream dedupes Nats-Msg-Id per stream, across workspaces: the derived ids
    carry the workspace, or the second tenant's audio.ready, partials and final would be
    dropped silently. Each tenant sends its own clip under the same request id and gets
    its own transcript back."""
    clips = {"tenant-a": "en01.wav", "tenant-b": "en02.wav"}
    async with Collector(nc) as seen:
        for ws, name in clips.items():
            await publish_audio(nc, (DATA / "speech" / name).read_bytes(), ws=ws,
                                request_id="req-1")
        finals = await seen.wait_count("mumu.transcript.final.", 2, timeout=60)
    ready = seen.on("mumu.audio.ready.")
    assert sorted(m.subject for m in ready) == ["mumu.audio.ready.tenant-a",
                                                "mumu.audio.ready.tenant-b"]
    assert len({AudioReady.model_validate_json(m.data).event_id for m in ready}) == 2
    got = {subjects.last_token(m.subject): TranscriptFinal.model_validate_json(m.data)
           for m in finals}
    assert set(got) == set(clips)
    refs = references()
    for ws, name in clips.items():
        final = got[ws]
        assert (final.workspace_id, final.request_id) == (ws, "req-1")
        assert jiwer.wer(words(refs[name]["text"]), words(final.text)) <= 0.25, final.text
    assert words(got["tenant-a"].text) != words(got["tenant-b"].text)
    partial_tenants = {subjects.last_token(m.subject)
                       for m in seen.on("mumu.transcript.partial.")}
    assert partial_tenants == set(clips)
    assert len(seen.on("mumu.transcript.final.")) == 2
    assert not seen.on("mumu.error.")


async def test_a_forged_msg_id_from_another_workspace_does_not_suppress_a_transcription(
    nc: NATS, pipeline: tuple[IngestStage, TranscribeStage]
) -> None:
    victim = new_id()
    async with Collector(nc) as seen:
        # the thief publishes first, on its own subject, with the id the victim will use
        await publish_audio(nc, (DATA / "speech" / "en01.wav").read_bytes(), ws="ws-thief",
                            extra={h.MSG_ID: f"ws-victim.{victim}"})
        await publish_audio(nc, (DATA / "speech" / "en02.wav").read_bytes(), ws="ws-victim",
                            request_id=victim)
        await seen.wait_count("mumu.transcript.final.ws-victim", 1, timeout=60)
    (final,) = (TranscriptFinal.model_validate_json(m.data)
                for m in seen.on("mumu.transcript.final.ws-victim"))
    assert final.request_id == victim
    truth = words(references()["en02.wav"]["text"])
    assert jiwer.wer(truth, words(final.text)) <= 0.25, final.text


async def test_a_workspace_named_norm_cannot_read_another_tenants_normalised_audio(
    nc: NATS, streams: None, settings: Settings, workspaces
) -> None:
    await workspaces("norm")
    async with running(build_ingest(settings), settings), Collector(nc) as seen:
        victim = await publish_audio(nc, (DATA / "speech" / "en01.wav").read_bytes())
        msgs = await seen.wait_count("mumu.audio.ready.", 1, timeout=30)
        stored = AudioReady.model_validate_json(msgs[0].data).object_name
        assert stored == f".norm/{WS}/{victim}.wav"
        # tenant "norm" names the other tenant's audio the way the old layout stored it,
        # and the way it is stored now
        old_layout = await publish_audio(nc, b"", ws="norm",
                                         extra={h.AUDIO_OBJECT: f"norm/{WS}/{victim}.wav"})
        new_layout = await publish_audio(nc, b"", ws="norm", extra={h.AUDIO_OBJECT: stored})
        errors = await seen.wait_count("mumu.error.norm", 2, timeout=30)
    by_id = {e.request_id: e.code for e in map(error_of, errors)}
    # uploads are read from the upload bucket of "norm" only, never from mumu-audio
    assert by_id == {old_layout: "unsupported_audio", new_layout: "unsupported_audio"}
    assert not seen.on("mumu.audio.ready.norm")


async def test_stopping_while_a_decode_runs_does_not_block_the_event_loop(
    nc: NATS, streams: None, settings: Settings
) -> None:
    stage = build_ingest(settings)
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    async with running(stage, settings):
        assert stage._executor is not None
        busy = stage._executor.submit(time.sleep, 0.8)  # a decode still running at stop
        ticks = asyncio.create_task(ticker())
    ticks.cancel()
    assert busy.done()  # stop() waited for it ...
    assert max(gaps) < 0.5, max(gaps)  # ... without freezing the loop meanwhile

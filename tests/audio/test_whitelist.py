"""Only whitelisted containers reach FFmpeg, each with its own demuxer: playlists and lists
(HLS, concat) at a local file or a loopback URL open nothing, on the raw NATS path."""

from __future__ import annotations

import io
from contextlib import suppress
from pathlib import Path

import av
import pytest
from nats.aio.client import Client as NATS

from mumu.contracts import headers as h
from mumu.contracts.audio_formats import AudioFormat
from mumu.contracts.events import AudioReady, PipelineError
from mumu.settings import Settings
from mumu.stages.ingest.decode import AudioRejectedError, Limits, decode, open_input
from mumu.stages.ingest.stage import build_stage as build_ingest
from tests.audio.conftest import DATA, Upload, publish_audio
from tests.harness import Collector, running
from tests.hostile_audio import riff, traps

LIMITS = Limits(max_duration=60, min_duration=0.1, silence_dbfs=-50)
REFUSED_BY_SNIFF = "refused before decoding"


@pytest.fixture
def trap_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The traps' directory, also the working directory (concat resolves relative names
    against it: the stage runs in this process)."""
    path = tmp_path / "traps"
    path.mkdir()
    monkeypatch.chdir(path)
    return path


def test_the_payloads_make_ffmpeg_open_files_and_urls_when_it_may(trap_dir: Path) -> None:
    """The control: the traps see FFmpeg open the targets when it probes (what decode did
    before the whitelist) or is handed a playlist demuxer; so the tests below can fail."""
    with traps(trap_dir) as t:
        attacks = t.payloads()
        with suppress(av.FFmpegError):  # probed, as `av.open(BytesIO(data))` did
            av.open(io.BytesIO(attacks["concat_relative"]), mode="r").close()
        after_probe = list(t.opened)
        for name in ("hls_file_path", "hls_loopback"):
            with suppress(av.FFmpegError):
                av.open(io.BytesIO(attacks[name]), mode="r", format="hls").close()
    assert after_probe == [str(trap_dir / t.relative)]
    assert str(t.fifo) in t.opened
    assert t.connections
    assert {host for host, _ in t.connections} == {"127.0.0.1"}


def test_decode_refuses_every_playlist_before_ffmpeg_sees_it(trap_dir: Path) -> None:
    with traps(trap_dir) as t:
        attacks = t.payloads()
        for name, data in attacks.items():
            with pytest.raises(AudioRejectedError) as refused:
                decode(data, LIMITS)
            assert refused.value.code == "unsupported_audio", name
            assert REFUSED_BY_SNIFF in refused.value.message, name
        for name, data in attacks.items():  # a wav header in front: the wav demuxer refuses
            with pytest.raises(AudioRejectedError) as refused:
                decode(riff(data), LIMITS)
            assert refused.value.code == "unsupported_audio", name
    assert t.quiet(), (t.opened, t.connections)


def test_even_a_playlist_demuxer_named_explicitly_opens_nothing(trap_dir: Path) -> None:
    """Defence in depth: no protocol is allowed for nested opens, so were a playlist
    demuxer ever chosen, it still could not open a file or a URL."""
    with traps(trap_dir) as t:
        attacks = t.payloads()
        for demuxer, names in {
            "hls": ("hls_file_url", "hls_file_path", "hls_loopback"),
            "concat": ("concat_relative", "concat_file", "concat_loopback"),
        }.items():
            for name in names:
                with pytest.raises(av.FFmpegError):
                    open_input(attacks[name], AudioFormat(demuxer, demuxer, "x")).close()
    assert t.quiet(), (t.opened, t.connections)


async def test_playlists_on_nats_are_dead_lettered_without_opening_anything(
    nc: NATS, streams: None, settings: Settings, trap_dir: Path, upload: Upload
) -> None:
    good = (DATA / "formats" / "en01.mp3").read_bytes()
    with traps(trap_dir) as t:
        attacks = t.payloads()
        attacks |= {f"riff_{name}": riff(data) for name, data in list(attacks.items())[:6]}
        async with running(build_ingest(settings), settings), Collector(nc) as seen:
            sent = {
                await publish_audio(nc, data, content_type="audio/wav"): name
                for name, data in attacks.items()
            }
            # the second form: the list uploaded to the workspace's bucket, the message names it
            for name in ("concat_relative", "id3_hls_loopback"):
                await upload(name, attacks[name])
                rid = await publish_audio(nc, b"", content_type="audio/wav",
                                          extra={h.AUDIO_OBJECT: name})
                sent[rid] = f"object_{name}"
            good_id = await publish_audio(nc, good, content_type="audio/wav")
            errors = await seen.wait_count("mumu.error.", len(sent), timeout=30)
            letters = await seen.wait_count("mumu.dlq.", len(sent), timeout=30)
            ready = await seen.wait_count("mumu.audio.ready.", 1, timeout=30)
    assert t.quiet(), (t.opened, t.connections)
    got = {e.request_id: e for e in map(PipelineError.model_validate_json, (m.data for m in errors))}
    assert set(got) == set(sent)
    for rid, name in sent.items():
        assert got[rid].code == "unsupported_audio", name
        assert (REFUSED_BY_SNIFF in got[rid].message) != name.startswith("riff_"), name
    rid_header = h.DLQ_ORIGINAL_PREFIX + h.REQUEST_ID
    assert sorted(m.headers[rid_header] for m in letters) == sorted(sent)
    assert {m.headers[h.DLQ_CODE] for m in letters} == {"unsupported_audio"}
    assert AudioReady.model_validate_json(ready[0].data).request_id == good_id

"""The whitelist's sniff: the test files are recognised, anything else is refused, and an
ID3 tag counts only when MPEG audio (or FLAC) follows it."""

from __future__ import annotations

from pathlib import Path

import pytest

from mumu.contracts import audio_formats as af
from mumu.gateway.asks import sniff as gateway_sniff

DATA = Path(__file__).parents[1] / "data"
FRAME = bytes.fromhex("fffb9064")  # MPEG-1 layer III, 128 kbit/s, 44.1 kHz
EXPECTED = {
    "formats/en01.flac": af.FLAC, "formats/en01.m4a": af.MP4, "formats/en01.mp3": af.MP3,
    "formats/en01.ogg": af.OGG, "formats/en01.webm": af.MATROSKA,
    "formats/en01_8k.wav": af.WAV, "speech/long_en.flac": af.FLAC,
}


def id3(body: bytes, size: int | None = None, flags: int = 0) -> bytes:
    n = len(body) if size is None else size
    syncsafe = bytes((n >> shift) & 0x7F for shift in (21, 14, 7, 0))
    return b"ID3\x04\x00" + bytes([flags]) + syncsafe + body


@pytest.mark.parametrize(("path", "expected"), EXPECTED.items())
def test_every_test_file_is_recognised_with_its_demuxer_and_content_type(
    path: str, expected: af.AudioFormat
) -> None:
    data = (DATA / path).read_bytes()
    assert af.sniff(data) == expected
    assert gateway_sniff(data) == expected.content_type


def test_an_id3_tag_counts_only_when_audio_follows_it() -> None:
    flac = (DATA / "formats" / "en01.flac").read_bytes()
    assert af.sniff(id3(b"TIT2") + FRAME) == af.MP3
    assert af.sniff(id3(b"TIT2") + b"\0" * 300 + FRAME) == af.MP3  # padding after the tag
    assert af.sniff(id3(b"x" * 20, flags=0x10) + b"3DI" + b"\0" * 7 + FRAME) == af.MP3  # footer
    assert af.sniff(id3(b"") + id3(b"") + FRAME) == af.MP3  # two tags
    assert af.sniff(id3(b"") + flac) == af.FLAC
    refused = [
        id3(b"") + b"#EXTM3U\n#EXTINF:10,\nhttp://127.0.0.1:1/x.ts\n",
        id3(b"") + b"ffconcat version 1.0\nfile 'x.wav'\n",
        id3(b"") + b"RIFF\0\0\0\0WAVE",  # only mp3 and flac carry ID3 tags
        id3(b""),  # nothing after it
        id3(b"", size=1000) + FRAME,  # the tag claims more than there is
        b"ID3\x04\x00\x00\x00\x00\x80\x00" + FRAME,  # not a syncsafe size
        id3(b"") + b"\0" * (af.MAX_PADDING + 1) + FRAME,
        id3(b"") + bytes.fromhex("fff15080"),  # ADTS AAC, not MPEG audio
    ]
    for data in refused:
        assert af.sniff(data) is None, data[:40]
        assert gateway_sniff(data) is None


def test_playlists_lists_and_noise_are_refused() -> None:
    for data in (
        b"#EXTM3U\n#EXT-X-TARGETDURATION:10\n", b"ffconcat version 1.0\n",
        b'<?xml version="1.0"?><MPD>', b"v=0\nc=IN IP4 127.0.0.1\n",
        bytes.fromhex("fff15080"),  # ADTS
        bytes.fromhex("ffffffff"),  # sync bits, reserved fields
        bytes.fromhex("ffe2"),  # sync bits, too short for a header
        b"RIFF\0\0\0\0AVI ", b"GIF89a", b"",
        (DATA / "bad" / "random.wav").read_bytes(), (DATA / "bad" / "image.wav").read_bytes(),
    ):
        assert af.sniff(data) is None, data[:40]
    assert af.sniff(FRAME) == af.MP3

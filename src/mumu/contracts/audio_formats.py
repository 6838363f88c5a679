"""The audio containers mumu accepts, recognised by their magic bytes: the one whitelist.

Both paths use it: the gateway refuses anything else with 415 before publishing, and
ingest refuses anything else with ``unsupported_audio`` before FFmpeg sees a byte (a
producer on NATS may skip the gateway). Ingest then opens the container with the
demuxer named here, so FFmpeg never probes: playlist and list demuxers (hls, dash,
concat, sdp, ...) that open nested files or URLs are never chosen.

Pure bytes logic, no FFmpeg: contracts is the layer both the gateway and the stages import.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AudioFormat:
    name: str
    demuxer: str
    """The FFmpeg input format (``av.open(..., format=demuxer)``)."""
    content_type: str


WAV = AudioFormat("wav", "wav", "audio/wav")
FLAC = AudioFormat("flac", "flac", "audio/flac")
OGG = AudioFormat("ogg", "ogg", "audio/ogg")  # opus, vorbis, flac or speex inside
MP3 = AudioFormat("mp3", "mp3", "audio/mpeg")
MATROSKA = AudioFormat("matroska", "matroska", "audio/webm")  # webm and mka
MP4 = AudioFormat("mp4", "mp4", "audio/mp4")  # FFmpeg's mov demuxer: mp4, m4a, mov

WHITELIST: tuple[AudioFormat, ...] = (WAV, FLAC, OGG, MP3, MATROSKA, MP4)
NAMES = "wav, flac, ogg/opus, mp3, webm/matroska, mp4/m4a"

ID3_HEADER = 10
MAX_ID3_TAGS = 4
MAX_PADDING = 65_536
"""Zero bytes tolerated between an ID3v2 tag and the first MPEG frame."""


_MAGIC: tuple[tuple[int, bytes, AudioFormat], ...] = (
    (0, b"fLaC", FLAC),
    (0, b"OggS", OGG),
    (0, b"\x1a\x45\xdf\xa3", MATROSKA),  # EBML
    (4, b"ftyp", MP4),
)


def sniff(data: bytes) -> AudioFormat | None:
    """The whitelisted container ``data`` starts with, or None (refuse it)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return WAV
    for offset, magic, fmt in _MAGIC:
        if data[offset : offset + len(magic)] == magic:
            return fmt
    if is_mpeg_frame(data[:4]):
        return MP3
    return _after_id3(data) if data[:3] == b"ID3" else None


def is_mpeg_frame(head: bytes) -> bool:
    """An MPEG-1/2/2.5 audio frame header (layer I-III): sync and no reserved field."""
    if len(head) < 4 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return False
    version, layer = (head[1] >> 3) & 3, (head[1] >> 1) & 3
    bitrate, rate = head[2] >> 4, (head[2] >> 2) & 3
    # ADTS (AAC) has layer 0: not MPEG audio, refused
    return version != 1 and layer != 0 and bitrate != 15 and rate != 3


def id3_tag_size(data: bytes) -> int | None:
    """Bytes of the ID3v2 tag ``data`` starts with (header and footer included), or None."""
    head = data[:ID3_HEADER]
    if len(head) < ID3_HEADER or head[:3] != b"ID3" or head[3] == 0xFF or head[4] == 0xFF:
        return None
    size_bytes = head[6:10]
    if any(b & 0x80 for b in size_bytes):  # a syncsafe integer: 7 bits a byte
        return None
    size = 0
    for b in size_bytes:
        size = size << 7 | b
    footer = ID3_HEADER if head[5] & 0x10 else 0
    return ID3_HEADER + size + footer


def _after_id3(data: bytes) -> AudioFormat | None:
    """An ID3v2 tag counts only when real audio follows it: an MPEG frame (mp3) or
    ``fLaC``. Anything else behind a tag (a playlist, a list, text) is refused."""
    pos = 0
    for _ in range(MAX_ID3_TAGS):
        size = id3_tag_size(data[pos:])
        if size is None:
            break
        pos += size
    if pos == 0 or pos >= len(data):
        return None
    rest = data[pos : pos + MAX_PADDING + 4]
    start = len(rest) - len(rest.lstrip(b"\0"))
    if start > MAX_PADDING:
        return None
    body = rest[start : start + 4]
    if is_mpeg_frame(body):
        return MP3
    if body == b"fLaC":
        return FLAC
    return None

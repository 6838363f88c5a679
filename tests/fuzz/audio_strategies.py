"""Hypothesis strategies of audio a producer or client might send: random bytes, real files
cut short or labelled as something else, WAV headers with extreme sample rates and channel
counts, headers that promise hours over a tiny body, zero bytes, and playlists."""

from __future__ import annotations

import struct
from pathlib import Path

from hypothesis import strategies as st

DATA = Path(__file__).parents[1] / "data"
REAL = sorted([*(DATA / "formats").glob("en01.*"), DATA / "speech" / "en02.wav"])
CONTENT_TYPES = ("audio/wav", "audio/flac", "audio/ogg", "audio/mpeg", "audio/webm",
                 "audio/mp4", "application/octet-stream", "text/plain", "video/mp4")


def wav_header(rate: int, channels: int, bits: int, data_bytes: int) -> bytes:
    """A RIFF/WAVE header as written, whatever its numbers say."""
    block = max(1, channels * bits // 8)
    fmt = struct.pack("<HHIIHH", 1, channels, rate, (rate * block) & 0xFFFFFFFF, block & 0xFFFF,
                      bits)
    riff_size = (36 + data_bytes) & 0xFFFFFFFF
    return (b"RIFF" + struct.pack("<I", riff_size) + b"WAVEfmt " + struct.pack("<I", 16) + fmt
            + b"data" + struct.pack("<I", data_bytes & 0xFFFFFFFF))


extreme_wavs = st.builds(
    lambda rate, channels, bits, claimed, body: wav_header(rate, channels, bits, claimed) + body,
    rate=st.one_of(st.sampled_from([1, 8, 100, 192_000, 384_000, 4_000_000_000]),
                   st.integers(1, 2**32 - 1)),
    channels=st.one_of(st.sampled_from([0, 2, 8, 64, 255, 65535]), st.integers(0, 65535)),
    bits=st.sampled_from([0, 1, 8, 16, 24, 32, 64, 12]),
    claimed=st.one_of(st.just(0xFFFFFFFF), st.integers(0, 2**32 - 1)),  # hours of "data"
    body=st.binary(max_size=256),
)

truncated = st.builds(lambda path, cut: path.read_bytes()[:cut],
                      st.sampled_from(REAL), st.integers(0, 4096))

playlists = st.sampled_from([
    b"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n",
    b"#EXTM3U\n#EXTINF:1,\nhttp://127.0.0.1:9/x.wav\n",
    b"ffconcat version 1.0\nfile '/etc/passwd'\n",
    b"[playlist]\nFile1=http://127.0.0.1:9/a.mp3\nNumberOfEntries=1\n",
])

hostile_audio = st.one_of(
    st.binary(max_size=2048), st.just(b""), truncated, extreme_wavs, playlists,
)
"""Bytes no stage may choke on; a few of them (a real file cut late) are valid audio."""

labelled = st.tuples(st.one_of(hostile_audio, st.sampled_from(REAL).map(Path.read_bytes)),
                     st.sampled_from(CONTENT_TYPES))
"""Audio with a Content-Type that may be a lie."""

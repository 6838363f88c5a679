"""Decoding a producer's audio to 16 kHz mono 16-bit PCM with PyAV, and validating it.

Only the containers of ``mumu.contracts.audio_formats`` are decoded, each with its own
demuxer named explicitly (FFmpeg never probes) and no protocol allowed for nested opens.
Blocking and CPU-bound: call it from an executor, never on the event loop.
"""

from __future__ import annotations

import io
import math
import wave
from dataclasses import dataclass

import av
import numpy as np

from mumu.contracts import audio_formats
from mumu.contracts.audio_formats import AudioFormat
from mumu.contracts.events import ErrorCode

SAMPLE_RATE = 16_000

NO_NESTED_OPENS = {"protocol_whitelist": "none"}
"""Every file or URL a demuxer opens besides our in-memory bytes goes through a protocol
(file, http, tcp, ...); this list names none of them, so such an open fails. None of the
whitelisted demuxers should try one: this holds even if one did."""
DEMUXER_OPTIONS: dict[str, dict[str, str]] = {
    # the mov demuxer can follow a track's data reference to another file: never
    audio_formats.MP4.demuxer: {"enable_drefs": "0", "use_absolute_path": "0"},
}


class AudioRejectedError(Exception):
    """The audio can never be transcribed; ``code`` is the client-facing error code."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message


@dataclass(frozen=True)
class Limits:
    max_duration: float
    min_duration: float
    silence_dbfs: float


@dataclass(frozen=True)
class Decoded:
    """Normalised audio: 16 kHz mono signed 16-bit little-endian samples."""

    pcm: np.ndarray
    source_format: str
    source_rate: int
    source_channels: int

    @property
    def duration(self) -> float:
        return float(self.pcm.size) / SAMPLE_RATE

    def wav_bytes(self) -> bytes:
        buf = io.BytesIO()
        with wave.open(buf, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(SAMPLE_RATE)
            w.writeframes(self.pcm.astype("<i2", copy=False).tobytes())
        return buf.getvalue()


def decode(data: bytes, limits: Limits) -> Decoded:
    """Decode ``data`` (a whitelisted container) or raise ``AudioRejectedError``."""
    if not data:
        raise AudioRejectedError("empty_audio", "the audio is empty (0 bytes)")
    fmt = audio_formats.sniff(data)
    if fmt is None:
        raise AudioRejectedError(
            "unsupported_audio",
            f"not a supported audio container (send {audio_formats.NAMES}); "
            "refused before decoding",
        )
    try:
        return _decode(data, fmt, limits)
    except AudioRejectedError:
        raise
    except (av.FFmpegError, ValueError, IndexError) as exc:
        raise AudioRejectedError("unsupported_audio", f"cannot decode the audio: {exc}") from exc


def open_input(data: bytes, fmt: AudioFormat) -> av.container.InputContainer:
    """The container of ``data`` opened with ``fmt``'s demuxer: no probing, no nested opens."""
    options = {**NO_NESTED_OPENS, **DEMUXER_OPTIONS.get(fmt.demuxer, {})}
    return av.open(
        io.BytesIO(data), mode="r", format=fmt.demuxer, options=options,
        metadata_errors="ignore",
    )


def _decode(data: bytes, fmt: AudioFormat, limits: Limits) -> Decoded:
    limit = int(limits.max_duration * SAMPLE_RATE)
    with open_input(data, fmt) as container:
        if not container.streams.audio:
            raise AudioRejectedError("unsupported_audio", "the file has no audio stream")
        stream = container.streams.audio[0]
        declared = _declared_seconds(container, stream)
        if declared is not None and declared > limits.max_duration + 1:
            raise _too_long(declared, limits)
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        chunks: list[np.ndarray] = []
        total = 0
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                samples = out.to_ndarray().reshape(-1)
                chunks.append(samples)
                total += samples.size
            if total > limit:
                raise _too_long(total / SAMPLE_RATE, limits)
        for out in resampler.resample(None):
            samples = out.to_ndarray().reshape(-1)
            chunks.append(samples)
            total += samples.size
        source_format = container.format.name
        rate = int(stream.codec_context.sample_rate or 0)
        channels = int(stream.codec_context.channels or 0)
    if total > limit:
        raise _too_long(total / SAMPLE_RATE, limits)
    pcm = np.concatenate(chunks).astype(np.int16, copy=False) if chunks else np.zeros(0, np.int16)
    decoded = Decoded(
        pcm=pcm, source_format=source_format, source_rate=rate, source_channels=channels
    )
    _check_content(decoded, limits)
    return decoded


def _declared_seconds(
    container: av.container.InputContainer, stream: av.AudioStream
) -> float | None:
    """The duration the container claims (checked again while decoding)."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return float(container.duration) / av.time_base
    return None


def _too_long(seconds: float, limits: Limits) -> AudioRejectedError:
    return AudioRejectedError(
        "too_long", f"the audio is longer than {limits.max_duration:g} s (at least {seconds:.1f} s)"
    )


def _check_content(decoded: Decoded, limits: Limits) -> None:
    if decoded.duration < max(limits.min_duration, 1 / SAMPLE_RATE):
        raise AudioRejectedError(
            "empty_audio",
            f"the audio holds {decoded.duration:.3f} s of sound "
            f"(minimum {limits.min_duration:g} s)",
        )
    peak = int(np.abs(decoded.pcm.astype(np.int32)).max())
    level = 20 * math.log10(peak / 32768) if peak else -math.inf
    if level < limits.silence_dbfs:
        raise AudioRejectedError(
            "empty_audio",
            f"the audio is silent (peak {level:.1f} dBFS, threshold {limits.silence_dbfs:g} dBFS)",
        )

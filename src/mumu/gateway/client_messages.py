"""The websocket's client messages that ask something, as models (``ask``, ``audio.end``,
``stream.start``, ``stream.end``).

``audio.end`` carries the same ``AudioOptions`` as the HTTP form and the ingest headers.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from mumu.contracts.options import AudioOptions
from mumu.gateway.models import not_blank

BAD_MESSAGE = "bad_message"
"""The error code of a client message that does not fit its model."""

class AskMessage(BaseModel):
    """``{"type": "ask", "text": ..., "language": ...}``"""

    model_config = ConfigDict(extra="ignore")

    type: Literal["ask"]
    text: Annotated[str, AfterValidator(not_blank)] = Field(min_length=1)
    language: str | None = Field(default=None, max_length=64)


class AudioEndMessage(AudioOptions):
    """``{"type": "audio.end", "format": "webm", ...options}`` after the binary frames."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["audio.end"]
    format: str | None = Field(default=None, max_length=16,
                               description="the container (webm, wav ...); sniffed anyway")


LIVE_FORMATS = ("pcm16", "webm")
"""``pcm16``: raw signed 16-bit little-endian PCM, 16 kHz mono; ``webm``: Opus in WebM, as
a browser's ``MediaRecorder`` records it (decoded to 16 kHz PCM16 by the gateway)."""
LIVE_SAMPLE_RATE = 16_000


class StreamStartMessage(BaseModel):
    """``{"type": "stream.start", "format": "pcm16" | "webm", "language"?, "prompt"?,
    "sample_rate"?, "answer"?, "word_timestamps"?, "request_id"?}``: a live stream begins;
    binary frames follow, then ``{"type": "stream.end"}``. The server answers
    ``stream.started`` (with the stream's ``request_id`` and ``stream_id``); each utterance
    is a request of its own, ``<request_id>-<n>``, whose partials, final and answer come
    like any other result."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["stream.start"]
    format: str = Field(max_length=16, description="pcm16 (16 kHz mono) or webm (Opus)")
    language: str | None = Field(default=None, max_length=64)
    prompt: str | None = Field(default=None, max_length=2000)
    sample_rate: int | None = Field(
        default=None, description="pcm16 only: must be 16000 if given")
    answer: bool = Field(default=True, description="false: transcribe only, no answers")
    word_timestamps: bool = Field(
        default=False, description="the finals' segments carry the timing of every word")
    request_id: str | None = Field(
        default=None, max_length=48,
        description="the client's id for the stream (utterances are <id>-<n>); default new")


class StreamEndMessage(BaseModel):
    """``{"type": "stream.end"}``: the stream's audio is complete; what was said since the
    last final becomes final. The server answers ``stream.ended``."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["stream.end"]

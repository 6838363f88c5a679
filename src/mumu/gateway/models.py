"""The HTTP API's requests and responses: the handlers validate and answer with these
models, and ``openapi.py`` generates ``/api/openapi.json`` from the same ones."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from mumu.contracts.ids import Id
from mumu.contracts.options import AudioOptions, Language, Prompt
from mumu.db.history import HistoryItem


class ErrorDetail(BaseModel):
    code: str = Field(description="machine-readable, e.g. rate_limited, invalid_token")
    message: str = Field(description="for the client: never internal detail")
    request_id: str = Field(
        description="the ask's request id, or this HTTP request's (also in X-Request-Id): "
        "the operators find the details in the log under it")


class ErrorBody(BaseModel):
    error: ErrorDetail


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    uptime: float
    hostname: str


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    reasons: list[str] = Field(default_factory=list)


# --- requests -----------------------------------------------------------------------


def not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be blank")
    return text


class SessionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    session_id: Id | None = Field(
        default=None, description="continue this session of the workspace (default: a new one)",
    )


class TextAskBody(BaseModel):
    """``POST /api/ask`` as JSON: a question asked as text."""

    model_config = ConfigDict(extra="forbid")

    text: Annotated[str, AfterValidator(not_blank)] = Field(
        min_length=1, description="the question (413 over the gateway's max_text_chars)",
    )
    language: str | None = Field(default=None, max_length=64,
                                 description="the language to answer in")


class AudioAskForm(AudioOptions):
    """``POST /api/ask`` as multipart: an audio file and its options (``AudioOptions``)."""

    model_config = ConfigDict(extra="ignore")

    audio: bytes = Field(description="wav, flac, ogg/opus, mp3, webm or m4a")


class AskQuery(BaseModel):
    wait: bool = Field(default=False, description="wait for the full result")
    request_id: Id | None = Field(
        default=None,
        description="your own id for this request (default: a new one). Asking again with "
        "the same id within the dedupe window (2 minutes) queues nothing new: the answer "
        "is the existing request (202 with duplicate=true, or with wait=true its result)",
    )


ResponseFormat = Literal["json", "text", "srt", "verbose_json", "vtt"]
Granularity = Literal["segment", "word"]


class TranscriptionForm(BaseModel):
    """``POST /v1/audio/transcriptions`` (OpenAI's form; unknown fields are ignored)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    file: bytes = Field(description="wav, flac, ogg/opus, mp3, webm or m4a")
    model: str = Field(description="accepted for compatibility; the gateway's model answers")
    language: Language = None
    prompt: Prompt = None
    response_format: ResponseFormat = "json"
    temperature: float | None = Field(default=None, ge=0, le=1,
                                      description="accepted for compatibility")
    timestamp_granularities: list[Granularity] = Field(
        default_factory=list, alias="timestamp_granularities[]",
    )

    @model_validator(mode="after")
    def _words_need_verbose_json(self) -> TranscriptionForm:
        if "word" in self.timestamp_granularities and self.response_format != "verbose_json":
            raise ValueError("word timestamps need response_format=verbose_json")
        return self

    def options(self) -> AudioOptions:
        """A transcription: the reason stage does not answer it."""
        return AudioOptions(
            language=self.language, prompt=self.prompt,
            word_timestamps="word" in self.timestamp_granularities, answer=False,
        )


# --- responses ----------------------------------------------------------------------


class SessionCreated(BaseModel):
    session_id: str
    token: str = Field(description="Bearer token for /api/ask, /api/ws and the history")
    expires_at: str = Field(description="ISO 8601")


class AskAccepted(BaseModel):
    request_id: str
    session_id: str
    duplicate: bool = Field(
        default=False,
        description="true when this request id was asked already: nothing new was queued",
    )


class AskResult(BaseModel):
    request_id: str
    session_id: str
    transcript: str | None
    language: str | None
    answer: str | None = Field(description="null when the ask said answer=false")
    cancelled: bool
    timings: dict[str, float] = Field(description="seconds since the request, per event")


class History(BaseModel):
    session_id: str
    items: list[HistoryItem] = Field(description="oldest first")


class Transcription(BaseModel):
    text: str


class VerboseSegment(BaseModel):
    id: int
    seek: int = 0
    start: float
    end: float
    text: str
    tokens: list[int] = Field(default_factory=list)
    temperature: float = 0.0
    avg_logprob: float
    compression_ratio: float = 0.0
    no_speech_prob: float


class VerboseWord(BaseModel):
    word: str
    start: float
    end: float


class VerboseTranscription(BaseModel):
    """``response_format=verbose_json``."""

    task: str
    language: str
    duration: float
    text: str
    segments: list[VerboseSegment]
    words: list[VerboseWord] | None = Field(
        default=None, description="with timestamp_granularities[]=word",
    )

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


MODELS: tuple[type[BaseModel], ...] = (
    ErrorBody, Health, Readiness, SessionRequest, SessionCreated, TextAskBody, AudioAskForm,
    AskQuery, AskAccepted, AskResult, HistoryItem, History, TranscriptionForm, Transcription,
    VerboseTranscription,
)
"""Every model the document names (in ``components/schemas``)."""

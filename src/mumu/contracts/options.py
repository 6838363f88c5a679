"""Per-request audio options: one model from the client to the Whisper call.

The gateway parses a form or websocket message into ``AudioOptions``, writes them as
``Mumu-*`` headers with ``to_headers()``, ingest reads them back (``IngestAudioHeaders``
is this model plus the message's own headers) and carries them in
``AudioReady.options``; the transcribe engine maps them to faster-whisper's arguments
in one function. No layer renames a field.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
)

from mumu.contracts import headers as h

Task = Literal["transcribe", "translate"]
PROMPT_MAX_CHARS: Final = 2000


def _blank_is_none(value: Any) -> Any:
    """An empty form field or header means "not given"."""
    return None if isinstance(value, str) and not value.strip() else value


def _one_line(text: str) -> str:
    """Header values are one line: runs of whitespace (newlines too) become one space."""
    return " ".join(text.split())


Language = Annotated[
    Annotated[str, StringConstraints(pattern=r"^[a-z]{2,3}$")] | None,
    BeforeValidator(_blank_is_none),
    Field(description="ISO 639-1 code (e.g. en); unset: detected"),
]
Prompt = Annotated[
    Annotated[str, StringConstraints(max_length=PROMPT_MAX_CHARS), AfterValidator(_one_line)]
    | None,
    BeforeValidator(_blank_is_none),
    Field(description="text the speech continues: spells names and terms (one line)"),
]


class AudioOptions(BaseModel):
    """How to transcribe one request's audio, and whether to answer it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    language: Language = None
    task: Task = Field(default="transcribe", description="translate: English text")
    prompt: Prompt = None
    word_timestamps: bool = Field(default=False, description="timing of every word")
    vad: bool = Field(default=False, description="skip silence (voice activity detection)")
    beam_size: int = Field(default=5, ge=1, le=20)
    answer: bool = Field(default=True, description="false: transcribe only, no answer")

    def to_headers(self) -> dict[str, str]:
        """These options as ingest headers (``Mumu-*``; unset ones are left out)."""
        fields = type(self).model_fields
        return {
            fields[name].alias or OPTION_HEADERS[name]: _header_value(value)
            for name, value in self if value is not None
        }

    def options(self) -> AudioOptions:
        """Just the options (of a model that carries more, such as the ingest headers)."""
        return AudioOptions.model_validate(self.model_dump(include=set(AudioOptions.model_fields)))


OPTION_HEADERS: Final[dict[str, str]] = {
    "language": h.LANGUAGE,
    "task": h.TASK,
    "prompt": h.PROMPT,
    "word_timestamps": h.WORD_TIMESTAMPS,
    "vad": h.VAD,
    "beam_size": h.BEAM_SIZE,
    "answer": h.ANSWER,
}
"""The ingest header of each option (public contract: producers send these)."""


def _header_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)

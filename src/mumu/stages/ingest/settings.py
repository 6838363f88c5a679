"""Settings of the ingest stage (``MUMU_INGEST__*``)."""

from pydantic import BaseModel, Field


class IngestSettings(BaseModel):
    max_bytes: int = Field(
        default=100 * 1024 * 1024, description="largest accepted audio file (bytes)"
    )
    max_duration: float = Field(default=1800.0, description="longest accepted audio (seconds)")
    audio_ttl: float = Field(
        default=86_400.0, description="seconds normalised audio stays in the Object Store"
    )

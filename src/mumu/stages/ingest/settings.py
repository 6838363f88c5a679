"""Settings of the ingest stage (``MUMU_INGEST__*``)."""

from pydantic import BaseModel, Field


class IngestSettings(BaseModel):
    max_bytes: int = Field(
        default=100 * 1024 * 1024, ge=1,
        description="largest accepted audio file (bytes), in a message or an uploaded object",
    )
    max_duration: float = Field(
        default=1800.0, gt=0, description="longest accepted audio (seconds)"
    )
    min_duration: float = Field(
        default=0.1, ge=0, description="shorter audio is rejected as empty_audio (seconds)"
    )
    silence_dbfs: float = Field(
        default=-50.0, le=0,
        description="audio whose loudest sample is below this level (dBFS) is rejected as "
        "all-silent (empty_audio)",
    )
    decode_workers: int = Field(
        default=2, ge=1, description="threads decoding audio (PyAV) off the event loop"
    )
    workspace_cache_seconds: float = Field(
        default=60.0, ge=0,
        description="how long a workspace found in the database is trusted without asking "
        "again (only when database_url is set)",
    )

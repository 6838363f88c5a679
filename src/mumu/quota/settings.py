"""Settings of the per-workspace quotas (``MUMU_QUOTA__*``): the defaults every workspace
gets unless ``mumu workspace limits <ws> --set`` overrides one in PostgreSQL."""

from pydantic import BaseModel, Field


class QuotaSettings(BaseModel):
    enabled: bool = Field(
        default=True, description="enforce the quotas below (off: every ask is admitted)"
    )
    asks_per_minute: int = Field(
        default=1200, ge=0,
        description="asks (text and audio) a workspace may start per minute: a token bucket "
        "of this size refilled at this rate, shared by every gateway replica and stage",
    )
    audio_seconds_per_day: float = Field(
        default=86_400.0, ge=0,
        description="seconds of decoded audio a workspace may send per UTC day",
    )
    concurrent_requests: int = Field(
        default=100, ge=0, le=10_000,
        description="requests of a workspace accepted and not finished (answer final, "
        "transcript final of a transcription, or error) at once",
    )
    longest_audio: float = Field(
        default=1800.0, ge=0, description="longest audio of one request (seconds)"
    )
    limits_cache_seconds: float = Field(
        default=5.0, ge=0,
        description="how long a workspace's limits read from PostgreSQL are used before "
        "they are read again (an override takes effect within this time)",
    )
    inflight_timeout: float = Field(
        default=900.0, gt=0,
        description="seconds after which an accepted request whose end was never seen "
        "stops counting as in flight",
    )

"""The one settings object: built once in the entry point and passed down.

Environment variables use the ``MUMU_`` prefix and ``__`` for nesting, for example
``MUMU_NATS__URL=nats://nats:4222`` or ``MUMU_STAGE__CONCURRENCY=8``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mumu.broker.settings import NatsSettings
from mumu.db.settings import DatabaseSettings
from mumu.gateway.settings import GatewaySettings
from mumu.quota.settings import QuotaSettings
from mumu.stages.ingest.settings import IngestSettings
from mumu.stages.persist.settings import PersistSettings
from mumu.stages.reason.settings import ReasonSettings
from mumu.stages.transcribe.settings import TranscribeSettings

__all__ = ["DatabaseSettings", "NatsSettings", "Settings", "StageRuntimeSettings"]


class StageRuntimeSettings(BaseModel):
    """How every stage consumes its durable pull consumer."""

    concurrency: int = Field(default=16, ge=1, description="messages handled at once")
    batch: int = Field(default=64, ge=1, description="messages asked for per fetch")
    fetch_timeout: float = Field(default=1.0, gt=0, description="seconds a fetch waits")
    fetch_ahead: int = Field(
        default=128, ge=0,
        description="messages a route fetches beyond its free slots, then serves round-robin "
        "by workspace (fair scheduling; 0: plain stream order)",
    )
    fetch_ahead_bytes: int = Field(
        default=16 * 1024**2, ge=0,
        description="payload bytes of the messages a route holds waiting for a slot, at most "
        "(past it, it fetches only for free slots)",
    )
    ack_wait: float = Field(
        default=30.0, gt=0, description="seconds before an unacked message is redelivered"
    )
    max_deliver: int = Field(default=5, ge=1, description="deliveries before dead-lettering")
    backoff: list[float] = Field(
        default=[0.5, 2.0, 5.0, 15.0],
        description="nak delays (seconds) by delivery attempt; the last repeats",
    )
    drain_timeout: float = Field(
        default=20.0, gt=0, description="seconds in-flight work may take after SIGTERM"
    )
    http_host: str = Field(default="127.0.0.1", description="bind address of /health and /metrics")
    http_port: int = Field(default=0, ge=0, description="port of /health and /metrics (0: any)")
    replicas: int = Field(default=1, ge=1, description="processes per stage started by `mumu up`")
    live_ttl: int = Field(
        default=600, ge=1,
        description="seconds partial transcripts and answer deltas stay in MUMU_RESULTS "
        "(per-message TTL; finals stay for the stream's max age)",
    )
    result_bytes_per_day: int = Field(
        default=128 * 1024 * 1024, ge=0,
        description="bytes of transcripts and answers one workspace may publish to "
        "MUMU_RESULTS per 24 h (a token bucket in `mumu-quota`; twice this is the most it "
        "holds, at most a quarter of the stream; 0: no limit)",
    )


class Settings(BaseSettings):
    """Everything mumu reads from its environment."""

    model_config = SettingsConfigDict(
        env_prefix="MUMU_",
        env_nested_delimiter="__",
        extra="ignore",
    )

    data_dir: Path = Field(
        default=Path(".mumu"),
        description="where `mumu up` keeps NATS, PostgreSQL and the development keyring",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="log level of every process"
    )
    database_url: SecretStr | None = Field(
        default=None,
        description="PostgreSQL URL of the application role; unset lets `mumu up` start "
        "an embedded PostgreSQL",
    )
    database_admin_url: SecretStr | None = Field(
        default=None, description="PostgreSQL URL of the owner role, for migrations"
    )
    master_keys: SecretStr | None = Field(
        default=None,
        description="master keyring: `id:base64key,...`, first is primary (see Persistence)",
    )
    otlp_endpoint: str | None = Field(
        default=None,
        description=(
            "OTLP/HTTP traces endpoint; unset records no spans (the W3C traceparent is still "
            "carried from stage to stage)"
        ),
    )
    nats: NatsSettings = Field(default_factory=NatsSettings)
    stage: StageRuntimeSettings = Field(default_factory=StageRuntimeSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    transcribe: TranscribeSettings = Field(default_factory=TranscribeSettings)
    reason: ReasonSettings = Field(default_factory=ReasonSettings)
    persist: PersistSettings = Field(default_factory=PersistSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    quota: QuotaSettings = Field(default_factory=QuotaSettings)

    @model_validator(mode="after")
    def _broker_defaults(self) -> Settings:
        """The broker's auth directory and this process's credentials default to the
        ``mumu up`` layout under ``data_dir`` (as the development keyring does)."""
        self.nats.auth_dir = self.auth_dir
        if self.nats.credentials is None and (self.auth_dir / "creds").is_dir():
            self.nats.credentials = self.auth_dir / "creds"
        return self

    @property
    def auth_dir(self) -> Path:
        """The broker's users (``MUMU_NATS__AUTH_DIR``, else the ``mumu up`` layout)."""
        return self.nats.auth_dir or self.data_dir / "nats" / "auth"

    @property
    def database(self) -> DatabaseSettings:
        """The database layer's own settings (its URLs and the pool's limits)."""
        p = self.persist
        return DatabaseSettings(
            url=self.database_url,
            admin_url=self.database_admin_url,
            pool_min=p.pool_min,
            pool_max=p.pool_max,
            connect_timeout=p.connect_timeout,
            command_timeout=p.command_timeout,
        )

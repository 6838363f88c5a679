"""How to reach NATS (``MUMU_NATS__*``): the broker's own settings, nested in ``Settings``."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, SecretStr


class NatsSettings(BaseModel):
    """How to reach NATS. Unset ``url`` means ``mumu up`` starts an embedded server."""

    url: str | None = Field(
        default=None,
        description="NATS server URL; unset lets `mumu up` start its own nats-server",
    )
    user: str | None = Field(default=None, description="NATS user name")
    password: SecretStr | None = Field(default=None, description="NATS password")
    creds_file: Path | None = Field(default=None, description="NATS .creds file (JWT + NKey)")
    credentials: Path | None = Field(
        default=None,
        description="this process's nkey seed file, or a directory of `<role>.nk` seeds; "
        "unset: `<data_dir>/nats/auth/creds` when it exists (a `mumu up` directory)",
    )
    auth_dir: Path | None = Field(
        default=None,
        description="the broker's users (`users.json`, the `auth.conf` every nats-server "
        "includes, service seeds); unset: `<data_dir>/nats/auth`",
    )
    connect_timeout: float = Field(default=5.0, description="seconds to wait for a connection")
    embedded_port: int = Field(
        default=4222, ge=0,
        description="port of the nats-server `mumu up` starts (taken or 0: any free port)",
    )
    max_payload: int = Field(
        default=1_048_576,
        description="largest message the embedded server accepts (bytes); bigger audio "
        "goes through the Object Store",
    )
    intake_max_bytes: int = Field(
        default=64 * 1024 * 1024, gt=0,
        description="bytes each workspace's intake stream MUMU_INTAKE_<ws> may hold "
        "(reserved per workspace; a full one refuses new requests)",
    )
    upload_max_bytes: int = Field(
        default=256 * 1024 * 1024, gt=0,
        description="bytes each workspace's upload bucket mumu-upload-<ws> may hold "
        "(reserved per workspace)",
    )

"""How to reach NATS (``MUMU_NATS__*``): the broker's own settings, nested in ``Settings``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr


class NatsTlsSettings(BaseModel):
    """TLS of this process's NATS connections (``MUMU_NATS__TLS__*``)."""

    ca_file: Path | None = Field(
        default=None,
        description="CA bundle (PEM) the NATS server certificate must chain to; set turns "
        "TLS on for client connections (a `tls://` URL alone uses the system CAs)",
    )
    cert_file: Path | None = Field(
        default=None, description="client certificate (PEM), for a server that verifies clients"
    )
    key_file: Path | None = Field(default=None, description="private key of `cert_file` (PEM)")
    server_name: str | None = Field(
        default=None,
        description="name the server certificate must carry when it differs from the URL's host",
    )


class NatsServerTlsSettings(BaseModel):
    """TLS of the nats-server ``mumu up`` starts (``MUMU_NATS__SERVER_TLS__*``)."""

    cert_file: Path | None = Field(
        default=None,
        description="server certificate (PEM) of the embedded nats-server; set turns TLS on "
        "(its SANs must include 127.0.0.1)",
    )
    key_file: Path | None = Field(default=None, description="private key of `cert_file` (PEM)")
    ca_file: Path | None = Field(
        default=None, description="CA bundle (PEM) client certificates must chain to"
    )
    verify: bool = Field(
        default=False,
        description="require a client certificate signed by `ca_file` of every connection",
    )


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
    stream_replicas: int | None = Field(
        default=None, ge=1, le=5,
        description="replicas of every stream and bucket `mumu up`, `mumu streams apply` and "
        "workspace provisioning create (3 on a 3-node cluster); unset: the files' own "
        "(1), or the embedded cluster's size",
    )
    embedded_cluster: int = Field(
        default=1, ge=1, le=5,
        description="nodes of the nats-server `mumu up` starts: 1, or 3 for a local "
        "JetStream cluster on loopback (`mumu up --cluster 3`)",
    )
    audio_max_bytes: int = Field(
        default=128 * 1024 * 1024, gt=0,
        description="bytes of normalised audio each workspace's bucket mumu-audio-<ws> may "
        "hold between ingest and transcribe (reserved per workspace; 16 kHz mono is 32 KB/s)",
    )
    once_max_bytes: int = Field(
        default=32 * 1024 * 1024, gt=0,
        description="bytes each workspace's KV mumu-once-<ws> (the stages' records of finals "
        "published at most once, about 120 bytes each, 24 h) may hold (reserved per "
        "workspace; a full one costs only that workspace the record: its finals are then "
        "guarded by the 120 s dedupe window alone)",
    )
    tls: NatsTlsSettings = Field(default_factory=NatsTlsSettings)
    server_tls: NatsServerTlsSettings = Field(default_factory=NatsServerTlsSettings)
    js_cipher: Literal["chachapoly", "aes", "none"] = Field(
        default="chachapoly",
        description="at-rest encryption of the JetStream store of the nats-server `mumu up` "
        "starts (`none`: off)",
    )
    js_key: SecretStr | None = Field(
        default=None,
        description="key of that encryption; unset: `mumu up` generates one once into "
        "`nats-js-key` in the data dir (mode 0600)",
    )

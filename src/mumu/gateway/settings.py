"""Settings of the gateway (``MUMU_GATEWAY__*``)."""

from pathlib import Path

from pydantic import BaseModel, Field, IPvAnyNetwork, SecretStr


class GatewayTlsSettings(BaseModel):
    """HTTPS and WSS of the gateway (``MUMU_GATEWAY__TLS__*``)."""

    cert_file: Path | None = Field(
        default=None,
        description="certificate chain (PEM) of the gateway; set serves https:// and wss://",
    )
    key_file: Path | None = Field(default=None, description="private key of `cert_file` (PEM)")
    ca_file: Path | None = Field(
        default=None,
        description="CA bundle (PEM) `mumu up` and `mumu ask` trust for the gateway's "
        "certificate (unset: the system CAs)",
    )


class GatewaySettings(BaseModel):
    host: str = Field(default="127.0.0.1", description="bind address of the gateway")
    port: int = Field(default=8080, ge=0, description="port of the gateway (0: any free port)")
    session_secret: SecretStr | None = Field(
        default=None,
        description="HMAC secret signing session tokens (required; `mumu up` generates one)",
    )
    session_secret_previous: SecretStr | None = Field(
        default=None,
        description="the session secret before the last rotation: tokens it signed are still "
        "accepted (new ones are signed with `session_secret`); unset it once they expired",
    )
    key_check_interval: float = Field(
        default=1.0, gt=0,
        description="seconds between two checks, against PostgreSQL, that the API keys behind "
        "the session tokens in use are not revoked (open websockets of a revoked key close)",
    )
    key_check_max_age: float = Field(
        default=3.0, gt=0,
        description="a session token whose API key was last confirmed live longer ago than this "
        "is checked before it is accepted (503 while the database cannot say)",
    )
    session_ttl: float = Field(
        default=86_400.0, gt=0, description="seconds a session token stays valid"
    )
    max_body_bytes: int = Field(
        default=25 * 1024 * 1024, ge=1024,
        description="largest HTTP request body (audio uploads included); larger gets 413",
    )
    max_frame_bytes: int = Field(
        default=1024 * 1024, ge=1024,
        description="largest websocket frame; a larger one closes the socket with 1009",
    )
    max_ws_audio_bytes: int = Field(
        default=25 * 1024 * 1024, ge=1024,
        description="audio one websocket may buffer before `audio.end`",
    )
    max_text_chars: int = Field(default=32_000, ge=1, description="longest text question")
    stream_idle_timeout: float = Field(
        default=10.0, gt=0,
        description="a live stream (websocket `stream.start`, Realtime session) that gets no "
        "audio for this long is ended (its last utterance becomes final) with `stream_timeout`",
    )
    stream_in_flight: int = Field(
        default=16, ge=1,
        description="chunks of one live stream published and not yet acknowledged by "
        "JetStream; the client's next frame waits (TCP backpressure)",
    )
    wait_timeout: float = Field(
        default=120.0, gt=0,
        description="seconds `?wait=true` and /v1/audio/transcriptions wait before a 504",
    )
    rate_limit_per_second: float = Field(
        default=20.0, gt=0, description="requests per second per workspace (sustained)"
    )
    rate_limit_burst: int = Field(
        default=60, ge=1, description="requests a workspace may make at once before 429"
    )
    failed_key_per_second: float = Field(
        default=0.2, gt=0,
        description="failed API key attempts per second per client address (sustained) "
        "before /api/session and /v1/... answer 429 to that address",
    )
    failed_key_burst: int = Field(
        default=10, ge=1, description="failed API key attempts a client address may make "
        "at once before 429",
    )
    lag_threshold: int = Field(
        default=1_000, ge=1,
        description="pending messages on a stage consumer above which new asks get 503",
    )
    lag_check_interval: float = Field(
        default=2.0, gt=0, description="seconds between two looks at stage consumer lag"
    )
    client_queue: int = Field(
        default=1_024, ge=1,
        description="events queued per websocket once 128 KiB is waiting unsent in its socket "
        "(the client is not reading); a client that falls further behind is closed (1013) "
        "and can resume from its cursor",
    )
    client_queue_bytes: int = Field(
        default=1024 * 1024, ge=1024,
        description="bytes queued per websocket once 128 KiB is waiting unsent in its socket; "
        "a client further behind is closed (1013) and can resume from its cursor",
    )
    max_sockets: int = Field(
        default=2_000, ge=1,
        description="open websockets per gateway process (authenticated or not); the next "
        "one gets 503 + Retry-After",
    )
    max_sockets_per_workspace: int = Field(
        default=500, ge=1,
        description="open websockets of one workspace per gateway process; the next one gets "
        "429 + Retry-After (close 4429 when it authenticated by its first message)",
    )
    max_audio_buffers: int = Field(
        default=32, ge=1,
        description="websockets buffering audio before `audio.end` at once (each up to "
        "`max_ws_audio_bytes`); the next upload gets an error (503 overloaded)",
    )
    max_audio_buffers_per_workspace: int = Field(
        default=8, ge=1,
        description="websockets of one workspace buffering audio at once; the next upload "
        "gets an error (429 too_many_uploads)",
    )
    max_waiting: int = Field(
        default=32, ge=1,
        description="requests waiting for their result at once (`?wait=true` and "
        "/v1/audio/transcriptions, each holding up to `max_body_bytes`); the next gets "
        "503 + Retry-After",
    )
    max_waiting_per_workspace: int = Field(
        default=8, ge=1,
        description="requests of one workspace waiting for their result at once; the next "
        "gets 429 + Retry-After",
    )
    client_api_key: SecretStr | None = Field(
        default=None, description="workspace API key `mumu ask` sends (client side only)"
    )
    heartbeat: float = Field(default=20.0, gt=0, description="websocket ping interval (seconds)")
    auth_timeout: float = Field(
        default=5.0, gt=0,
        description="seconds a websocket opened without ?token= has to send its auth "
        "message before it is closed (4401)",
    )
    tls: GatewayTlsSettings = Field(default_factory=GatewayTlsSettings)
    trusted_proxies: list[IPvAnyNetwork] = Field(
        default_factory=list,
        description="addresses or networks (CIDR) of TLS-terminating proxies in front of the "
        "gateway; only from these are X-Forwarded-For/-Proto/-Host believed",
    )

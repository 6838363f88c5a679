"""Settings of the gateway (``MUMU_GATEWAY__*``)."""

from pydantic import BaseModel, Field, SecretStr


class GatewaySettings(BaseModel):
    host: str = Field(default="127.0.0.1", description="bind address of the gateway")
    port: int = Field(default=8080, ge=0, description="port of the gateway (0: any free port)")
    session_secret: SecretStr | None = Field(
        default=None, description="HMAC secret signing session tokens"
    )

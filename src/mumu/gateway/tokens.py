"""Signed, expiring session tokens: ``<base64url payload>.<base64url HMAC-SHA256>``.

A token binds one workspace and one session. It is verified without any lookup,
so every gateway replica sharing the secret accepts it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from dataclasses import dataclass

from pydantic import SecretStr

from mumu.contracts.ids import is_id

MIN_SECRET_BYTES = 16


class InvalidTokenError(Exception):
    """The token is malformed, forged or expired (the message says which, for the client)."""


@dataclass(frozen=True, slots=True)
class SessionClaims:
    workspace_id: str
    session_id: str
    expires_at: float


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    def __init__(self, secret: SecretStr | None, ttl: float) -> None:
        if secret is None or len(secret.get_secret_value().encode()) < MIN_SECRET_BYTES:
            raise RuntimeError(
                "MUMU_GATEWAY__SESSION_SECRET is not set (or shorter than 16 bytes): the gateway "
                "signs session tokens with it; `mumu up` generates one, a standalone gateway "
                "needs it in the environment (e.g. `openssl rand -hex 32`)"
            )
        self._key = secret.get_secret_value().encode()
        self.ttl = ttl

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest())

    def issue(
        self, workspace_id: str, session_id: str, now: float | None = None
    ) -> tuple[str, float]:
        """A token for (workspace, session) and its expiry (unix seconds)."""
        expires = round((now if now is not None else time.time()) + self.ttl, 3)
        payload = {"v": 1, "ws": workspace_id, "sid": session_id, "exp": expires}
        body = _b64(json.dumps(payload, separators=(",", ":")).encode())
        return f"{body}.{self._sign(body)}", expires

    def verify(self, token: str, now: float | None = None) -> SessionClaims:
        body, dot, signature = token.partition(".")
        if not dot or not body or not signature or len(token) > 1024 or not token.isascii():
            raise InvalidTokenError("malformed session token")
        if not hmac.compare_digest(self._sign(body), signature):
            raise InvalidTokenError("session token signature does not match")
        try:
            payload = json.loads(_unb64(body))
            claims = SessionClaims(str(payload["ws"]), str(payload["sid"]), float(payload["exp"]))
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise InvalidTokenError("malformed session token") from exc
        if claims.expires_at <= (now if now is not None else time.time()):
            raise InvalidTokenError("session token expired: ask POST /api/session for a new one")
        if not (is_id(claims.workspace_id) and is_id(claims.session_id)):
            raise InvalidTokenError("malformed session token")
        return claims

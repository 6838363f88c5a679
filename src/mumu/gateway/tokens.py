"""Signed, expiring session tokens: ``<base64url payload>.<base64url HMAC-SHA256>``.

A token binds one workspace, one session and the API key it was issued for (``kid``).
Its signature is checked without any lookup, so every gateway replica sharing the secret
accepts it; whether its API key is still live is ``key_status.KeyStatus``'s question.

Two secrets rotate without logging anyone out: tokens are signed with the current one
(``MUMU_GATEWAY__SESSION_SECRET``) and verified with it or the previous one
(``MUMU_GATEWAY__SESSION_SECRET_PREVIOUS``).
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
    key_id: str | None = None
    """The API key the token was issued for; None only in tokens a gateway without a
    database cannot check anyway (tests, benchmarks)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _key_of(secret: SecretStr | None, name: str) -> bytes:
    if secret is None or len(secret.get_secret_value().encode()) < MIN_SECRET_BYTES:
        raise RuntimeError(
            f"{name} is not set (or shorter than {MIN_SECRET_BYTES} bytes): the gateway "
            "signs session tokens with it; `mumu up` generates one, a standalone gateway "
            "needs it in the environment (e.g. `openssl rand -hex 32`)"
        )
    return secret.get_secret_value().encode()


def _mac(key: bytes, body: str) -> str:
    return _b64(hmac.new(key, body.encode(), hashlib.sha256).digest())


class TokenSigner:
    """Signs with the current secret; verifies with the current or the previous one."""

    def __init__(self, secret: SecretStr | None, ttl: float,
                 previous: SecretStr | None = None) -> None:
        self._key = _key_of(secret, "MUMU_GATEWAY__SESSION_SECRET")
        self._keys = [self._key]
        if previous is not None:
            self._keys.append(_key_of(previous, "MUMU_GATEWAY__SESSION_SECRET_PREVIOUS"))
        self.ttl = ttl

    def issue(
        self, workspace_id: str, session_id: str, now: float | None = None,
        *, key_id: str | None = None,
    ) -> tuple[str, float]:
        """A token for (workspace, session) of API key ``key_id``, and its expiry (unix
        seconds)."""
        expires = round((now if now is not None else time.time()) + self.ttl, 3)
        payload: dict[str, object] = {"v": 2, "ws": workspace_id, "sid": session_id,
                                      "exp": expires}
        if key_id is not None:
            payload["kid"] = key_id
        body = _b64(json.dumps(payload, separators=(",", ":")).encode())
        return f"{body}.{_mac(self._key, body)}", expires

    def _signed(self, body: str, signature: str) -> bool:
        # every key is tried (no early exit): the time taken says nothing about which
        matches = [hmac.compare_digest(_mac(key, body), signature) for key in self._keys]
        return any(matches)

    def verify(self, token: str, now: float | None = None) -> SessionClaims:
        body, dot, signature = token.partition(".")
        if not dot or not body or not signature or len(token) > 1024 or not token.isascii():
            raise InvalidTokenError("malformed session token")
        if not self._signed(body, signature):
            raise InvalidTokenError("session token signature does not match")
        try:
            payload = json.loads(_unb64(body))
            kid = payload.get("kid")
            claims = SessionClaims(str(payload["ws"]), str(payload["sid"]), float(payload["exp"]),
                                   None if kid is None else str(kid))
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
            raise InvalidTokenError("malformed session token") from exc
        if claims.expires_at <= (now if now is not None else time.time()):
            raise InvalidTokenError("session token expired: ask POST /api/session for a new one")
        if not (is_id(claims.workspace_id) and is_id(claims.session_id)):
            raise InvalidTokenError("malformed session token")
        return claims

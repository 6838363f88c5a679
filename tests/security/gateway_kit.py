"""What the gateway attacks share: a client that keeps every error body for the secrets
scan, B's conversation (the victim's data), and forged tokens."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
import asyncpg
from pydantic import SecretStr
from yarl import URL

from mumu.gateway.tokens import TokenSigner
from tests.secrets_scan import words_of
from tests.security.run import SecurityRun


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Reply:
    status: int
    text: str

    @property
    def code(self) -> str | None:
        try:
            return str(json.loads(self.text)["error"]["code"])
        except (ValueError, KeyError, TypeError):
            return None

    def json(self) -> Any:
        return json.loads(self.text)


class Client:
    """HTTP calls to the run's gateway; error bodies go to the run (the scan reads them)."""

    def __init__(self, run: SecurityRun, http: aiohttp.ClientSession) -> None:
        self.run = run
        self.http = http

    async def call(self, method: str, path: str, token: str | None = None, **kw: Any) -> Reply:
        headers = {**kw.pop("headers", {}), **(bearer(token) if token is not None else {})}
        url = URL(self.run.gateway + path, encoded=True)  # the path goes out as written
        async with self.http.request(method, url, headers=headers, **kw) as resp:
            reply = Reply(resp.status, await resp.text())
        if reply.status >= 400:
            self.run.error_body(method, reply.status, reply.text)
        return reply

    async def session(self, api_key: str, session_id: str | None = None) -> dict[str, Any]:
        body = {"session_id": session_id} if session_id else None
        reply = await self.call("POST", "/api/session", api_key, json=body)
        assert reply.status == 200, reply.text
        created: dict[str, Any] = reply.json()
        self.run.secret("session token", created["token"])
        return created

    async def ask(self, token: str, text: str, request_id: str | None = None) -> Reply:
        query = "?wait=true" + (f"&request_id={request_id}" if request_id else "")
        reply = await self.call("POST", "/api/ask" + query, token, json={"text": text},
                                timeout=aiohttp.ClientTimeout(total=120))
        if reply.status == 200:
            body = reply.json()
            self.run.words.update(words_of(body["transcript"] or "", body["answer"] or ""))
        return reply


@dataclass
class Victim:
    """B's data: what no attack may ever return."""

    workspace: str
    session_id: str
    token: str
    request_ids: list[str] = field(default_factory=list)
    cursors: list[int] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)

    def leaked(self, text: str) -> bool:
        """Whether ``text`` (a response, a frame) carries anything of B's."""
        if self.workspace in text or any(r in text for r in self.request_ids):
            return True
        secret_words = {w for t in self.texts for w in words_of(t) if len(w) >= 7}
        return bool(secret_words & words_of(text))


@dataclass
class Scene:
    client: Client
    b: Victim
    a_token: str
    a_session: str
    a_request: str
    a_key: str


def ws_url(run: SecurityRun, token: str | None = None, after: int | None = None) -> str:
    query = [f"token={quote(token, safe='')}"] if token is not None else []
    query += [f"after={after}"] if after is not None else []
    return "ws" + run.gateway.removeprefix("http") + "/api/ws" + ("?" + "&".join(query))


async def frames_until(sock: aiohttp.ClientWebSocketResponse, kind: str, *, request: str = ""
                       ) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(120):
        while True:
            msg = await sock.receive()
            assert msg.type == aiohttp.WSMsgType.TEXT, (msg.type, msg.data, got)
            got.append(json.loads(msg.data))
            if got[-1]["type"] == kind and (not request or got[-1].get("request_id") == request):
                return got


async def stored(c: Client, b: Victim, rows: int) -> list[dict[str, Any]]:
    """B's history once the persist stage stored ``rows`` rows of it."""
    async with asyncio.timeout(30):
        while True:
            reply = await c.call("GET", f"/api/sessions/{b.session_id}/history", b.token)
            assert reply.status == 200, reply.text
            items: list[dict[str, Any]] = reply.json()["items"]
            if len(items) >= rows:
                return items
            await asyncio.sleep(0.2)


async def api_key_id(run: SecurityRun, workspace: str) -> str:
    conn = await asyncpg.connect(run.admin_url)
    try:
        kid = await conn.fetchval(
            "SELECT id::text FROM mumu.api_keys WHERE workspace_id = $1::uuid "
            "AND revoked_at IS NULL ORDER BY created_at LIMIT 1", workspace)
    finally:
        await conn.close()
    assert kid is not None
    return str(kid)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _payload(token: str) -> dict[str, Any]:
    body = token.partition(".")[0]
    loaded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return loaded


def with_claims(token: str, **claims: Any) -> str:
    """``token`` with its claims changed and its signature kept."""
    body = _b64(json.dumps({**_payload(token), **claims}, separators=(",", ":")).encode())
    return f"{body}.{token.partition('.')[2]}"


def flipped_signature(token: str) -> str:
    body, _, sig = token.partition(".")
    return f"{body}.{sig[:-2]}{'A' if sig[-2] != 'A' else 'B'}{sig[-1]}"


def alg_none(token: str) -> str:
    """A JWT that says it needs no signature, with the token's claims."""
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{token.partition('.')[0]}."


def signed_with(secret: str, workspace: str, session: str, key_id: str | None,
                *, age: float = 0.0, ttl: float = 3600.0) -> str:
    """A token signed with ``secret`` (the gateway's own, or an attacker's guess)."""
    signer = TokenSigner(SecretStr(secret), ttl)
    return signer.issue(workspace, session, now=time.time() - age, key_id=key_id)[0]

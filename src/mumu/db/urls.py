"""PostgreSQL URL helpers: database and user swaps (redaction is `mumu.logs.redacted`)."""

from __future__ import annotations

from urllib.parse import quote, urlsplit, urlunsplit


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + quote(database, safe="")))


def with_user(url: str, user: str, password: str | None) -> str:
    parts = urlsplit(url)
    auth = quote(user, safe="")
    if password is not None:
        auth += ":" + quote(password, safe="")
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{auth}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


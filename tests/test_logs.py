"""The JSON log lines every process writes carry no secret, whatever code logged them."""

from __future__ import annotations

import json
import logging
import sys

from mumu.logs import JsonFormatter

SECRETS = {
    "nats://app:n4ts-pw@nats:4222": "n4ts-pw",
    "postgresql://mumu_app:pg-pw@db:5432/mumu": "pg-pw",
    "https://user:llm-pw@llm.internal/v1": "llm-pw",
    "host=db user=mumu password=kv-pw": "kv-pw",
    "Authorization: Bearer eyJ3cyI6IjEiLCJzaWQiOiJzIn0.c2lnbmF0dXJl": "eyJ3cyI6IjEiLCJzaWQi",
    "api key mumu_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789": "GhIjKlMnOpQrStUv",
    "GET /api/ws?after=3&token=eyJ3cyI6IjEifQ.c2ln HTTP/1.1": "eyJ3cyI6IjEifQ",
}


def _line(msg: str, *args: object, exc: BaseException | None = None) -> dict[str, str]:
    record = logging.LogRecord("mumu.test", logging.ERROR, __file__, 1, msg, args,
                               (type(exc), exc, exc.__traceback__) if exc else None)
    entry: dict[str, str] = json.loads(JsonFormatter().format(record))
    return entry


def test_json_log_lines_are_scrubbed_of_passwords_tokens_and_api_keys() -> None:
    for text, secret in SECRETS.items():
        line = _line("failed: %s", text)
        assert secret not in line["msg"], line
        try:
            raise RuntimeError(f"boom at {text}")
        except RuntimeError:
            line = _line("unhandled", exc=sys.exc_info()[1])
        assert secret not in line["exc"], line
    # what is not a secret stays readable: host, user, the key's stored prefix
    assert _line("%s", "nats://app:n4ts-pw@nats:4222")["msg"] == "nats://app:***@nats:4222"
    assert "mumu_AbCdEf" in _line("%s", "mumu_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789")["msg"]
    assert _line("see %s", "https://example.com/a")["msg"] == "see https://example.com/a"

"""What a client is told about a failed request (``mumu.error.<ws>``): a code and a message
meant for it. The full reason (backend URLs, database errors, exception text) stays in
the stage's log and the dead letter (operators only).

Codes about the client's own input keep the handler's message, which describes that
input; URLs and file paths in it are blanked all the same. Every other code gets a fixed
message.
"""

from __future__ import annotations

import re

from mumu.contracts.events import ErrorCode

ABOUT_THE_INPUT: frozenset[str] = frozenset({
    "schema_violation", "unsupported_audio", "empty_audio", "too_long", "too_large",
    "missing_header", "no_speech", "unknown_workspace", "quota_exceeded", "stream_timeout",
})
"""Codes whose message says what is wrong with what the client sent."""

FIXED: dict[str, str] = {
    "internal": "the request failed inside mumu; the operators can look it up by its "
                "request id",
    "reason_unavailable": "the answer model is not available right now; ask again later",
    "transcribe_failed": "the audio could not be transcribed",
    "persist_failed": "the result could not be stored",
    "max_deliver_exceeded": "the request failed after repeated attempts",
    "shredded": "this workspace's data was crypto-erased: nothing of it is stored",
    "result_bytes_exceeded": "this workspace's results are at their daily size limit; ask "
                             "again later",
    "workspace_shredded": "this workspace was crypto-shredded: it takes no new asks until an "
                          "operator re-enables it",
}
FALLBACK = "the request failed"
LONGEST = 512

_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://\S+")
_PATH = re.compile(r"(?<![\w.:/])/(?:[\w.@-]+/)+[\w.@-]*")


def scrubbed(text: str) -> str:
    """``text`` without URLs (which may carry credentials) or absolute file paths."""
    return _PATH.sub("<path>", _URL.sub("<url>", text))


def client_message(code: ErrorCode, detail: str) -> str:
    """The message a client sees for an error ``code`` whose full reason is ``detail``."""
    if code in ABOUT_THE_INPUT:
        return scrubbed(detail)[:LONGEST]
    return FIXED.get(code, FALLBACK)

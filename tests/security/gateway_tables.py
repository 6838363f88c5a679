"""The gateway attacks' tables: forged tokens and tampered history paths."""

from __future__ import annotations

import time
from urllib.parse import quote

from tests.security.gateway_kit import (
    Scene,
    alg_none,
    flipped_signature,
    signed_with,
    with_claims,
)
from tests.security.run import SecurityRun


def forged_tokens(run: SecurityRun, s: Scene) -> list[tuple[str, str, str]]:
    """(attack, token, the error code it must get)."""
    b, secret = s.b, run.session_secret
    return [
        ("B's token, signature flipped", flipped_signature(b.token), "invalid_token"),
        ("A's token claiming B's workspace", with_claims(s.a_token, ws=b.workspace),
         "invalid_token"),
        ("A's token claiming B's session", with_claims(s.a_token, sid=b.session_id),
         "invalid_token"),
        ("A's token, expiry pushed out", with_claims(s.a_token, exp=time.time() + 10**6),
         "invalid_token"),
        ("alg none JWT of A's claims", alg_none(s.a_token), "invalid_token"),
        ("A's claims with no signature", s.a_token.partition(".")[0] + ".", "invalid_token"),
        ("signed with a guessed secret",
         signed_with("attacker-guess-0123456789", b.workspace, b.session_id, s.a_key),
         "invalid_token"),
        ("expired (the real secret)",
         signed_with(secret, run.ws("A").id, s.a_session, s.a_key, age=7200, ttl=3600),
         "invalid_token"),
        ("B's workspace with A's live API key (the real secret)",
         signed_with(secret, b.workspace, b.session_id, s.a_key), "token_revoked"),
        ("B's workspace, no API key (the real secret)",
         signed_with(secret, b.workspace, b.session_id, None), "invalid_token"),
        ("B's API key as a session token", run.ws("B").api_key, "invalid_token"),
        ("a token of 2 kB", "x" * 1024 + "." + "y" * 1024, "invalid_token"),
        ("non-ASCII token", with_claims(s.a_token, ws="é") + "é", "invalid_token"),
    ]


def tampered_paths(s: Scene) -> list[tuple[str, str, int, str]]:
    """(attack, path, status, code) for A's valid token."""
    b, mine = s.b, s.a_session
    fullwidth = b.session_id.translate({ord(d): ord(d) + 0xFEE0 for d in "0123456789"})
    history = "/api/sessions/{}/history"
    return [
        ("B's session id", history.format(b.session_id), 403, "forbidden"),
        ("B's request id", history.format(b.request_ids[0]), 403, "forbidden"),
        ("B's workspace id", history.format(b.workspace), 403, "forbidden"),
        ("traversal", f"/api/sessions/{mine}/../{b.session_id}/history", 404, "not_found"),
        ("encoded traversal", history.format(f"{mine}%2F..%2F{b.session_id}"), 403, "forbidden"),
        ("double-encoded", history.format(f"{mine}%252F..%252F{b.session_id}"), 403,
         "forbidden"),
        ("NUL suffix", history.format(f"{b.session_id}%00"), 403, "forbidden"),
        ("NUL prefix", history.format(f"{mine}%00{b.session_id}"), 403, "forbidden"),
        ("upper case", history.format(b.session_id.upper()), 403, "forbidden"),
        ("padded", history.format(f"%20{b.session_id}"), 403, "forbidden"),
        ("fullwidth digits", history.format(quote(fullwidth)), 403, "forbidden"),
        ("wildcard", history.format("%2A"), 403, "forbidden"),
        ("SQL", history.format(quote(f"{mine}' OR '1'='1")), 403, "forbidden"),
        ("empty id", "/api/sessions//history", 404, "not_found"),
    ]

"""The message of a ``mumu.error.<ws>`` event: the input's fault explained, anything else
fixed; URLs and paths never pass (the full reason is the dead letter's)."""

from __future__ import annotations

from mumu.runtime.client_errors import FALLBACK, FIXED, client_message


def test_input_errors_keep_their_explanation_without_urls_or_paths() -> None:
    said = client_message("unsupported_audio", "cannot decode the audio: bad header at "
                          "/var/lib/mumu/tmp/x.wav via https://u:pw@store.internal/a?b=c")
    assert said == "cannot decode the audio: bad header at <path> via <url>"
    # slashes that are not paths stay: formats, media types, relative object names
    kept = "not a supported audio container (send wav, ogg/opus); object 'ws-b/secret.wav'"
    assert client_message("unsupported_audio", kept) == kept


def test_every_other_code_gets_a_fixed_message() -> None:
    detail = "gave up after 5 deliveries: database error: permission denied for table answers"
    assert client_message("persist_failed", detail) == FIXED["persist_failed"]
    assert client_message("internal", "Traceback ... asyncpg ...") == FIXED["internal"]
    assert set(FIXED) >= {"internal", "reason_unavailable", "transcribe_failed",
                          "persist_failed", "max_deliver_exceeded"}
    assert FALLBACK not in FIXED.values()

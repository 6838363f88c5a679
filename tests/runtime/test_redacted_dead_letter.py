"""A ``RedactedError`` dead letter keeps nothing of the message's content (in memory)."""

from __future__ import annotations

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from mumu.contracts import headers as h
from mumu.contracts.events import DeadLetterHeaders
from mumu.runtime.deadletter import dead_letter

SECRET = "my bank password is hunter2"


def letter_of(redact: bool) -> tuple[bytes, dict[str, str]]:
    original = Msg(NATS(), subject="mumu.answer.final.ws", data=f'{{"text":"{SECRET}"}}'.encode(),
                   headers={h.MSG_ID: "m1", h.PROMPT: SECRET})
    out = dead_letter(original, stage="persist", code="shredded", reason="workspace shredded",
                      stream="MUMU_RESULTS", sequence=7, deliveries=1, max_payload=1 << 20,
                      redact=redact)
    return out.payload, dict(out.headers)


def test_a_redacted_letter_has_no_body_and_no_original_headers() -> None:
    payload, headers = letter_of(redact=True)
    assert payload == b""
    assert SECRET not in str(headers)
    assert not [k for k in headers if k.startswith(h.DLQ_ORIGINAL_PREFIX)]
    parsed = DeadLetterHeaders.model_validate(headers)  # still a valid letter
    assert (parsed.code, parsed.subject, parsed.stream, parsed.sequence, parsed.body_omitted) == (
        "shredded", "mumu.answer.final.ws", "MUMU_RESULTS", 7, "true")
    assert headers[h.DLQ_BODY_SIZE] == str(len(f'{{"text":"{SECRET}"}}'))


def test_an_ordinary_letter_keeps_the_body_and_headers() -> None:
    payload, headers = letter_of(redact=False)
    assert SECRET.encode() in payload
    assert headers[h.DLQ_ORIGINAL_PREFIX + h.PROMPT] == SECRET

"""Reading an ingest message's headers into the ``IngestAudioHeaders`` contract."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import ValidationError

from mumu.contracts.events import IngestAudioHeaders
from mumu.runtime import PermanentError

_ALIASES = {
    (field.alias or name).lower(): field.alias or name
    for name, field in IngestAudioHeaders.model_fields.items()
}


def parse_headers(headers: Mapping[str, str]) -> IngestAudioHeaders:
    """The contract headers (names matched case-insensitively), or a ``PermanentError``.

    A required header that is absent is ``missing_header``; one with a bad value is
    ``schema_violation``, and so is one given twice (names differ only in case) with two
    values. Headers mumu does not know (``traceparent``, ``Nats-Msg-Id``)
    are ignored.
    """
    known: dict[str, str] = {}
    for k, v in headers.items():
        name = _ALIASES.get(k.lower())
        if name is None:
            continue
        if known.get(name, v) != v:  # which one the producer meant is anyone's guess
            raise PermanentError(
                "schema_violation", f"header {name} given twice, with different values")
        known[name] = v
    try:
        return IngestAudioHeaders.model_validate(known)
    except ValidationError as exc:
        missing = [str(e["loc"][0]) for e in exc.errors() if e["type"] == "missing"]
        if missing:
            raise PermanentError(
                "missing_header", f"required header(s) missing: {', '.join(missing)}"
            ) from exc
        detail = "; ".join(f"{e['loc'][0]}: {e['msg']}" for e in exc.errors()[:5])
        raise PermanentError("schema_violation", f"invalid header(s): {detail}") from exc


MAX_OBJECT_NAME = 1024


def check_object_name(name: str) -> None:
    """A plausible object name. Which bucket it is read from is not the producer's choice:
    always the upload bucket of the workspace of the message's subject."""
    if not name.strip() or len(name) > MAX_OBJECT_NAME:
        raise PermanentError(
            "schema_violation",
            f"Mumu-Audio-Object must name an object of your workspace's upload bucket "
            f"(1 to {MAX_OBJECT_NAME} characters; got {name[:80]!r})",
        )

"""The one rule for workspace, session and request ids.

An id is safe as a NATS subject token, a header value and a URL path segment:
1 to 64 of ``A-Z a-z 0-9 _ -``. Every model field and every hand check uses this.
"""

from __future__ import annotations

import re
from typing import Annotated, Final

from pydantic import StringConstraints

ID_CHARS: Final = r"[A-Za-z0-9_-]{1,64}"
"""The rule without anchors, for patterns that find an id inside other text."""
ID_PATTERN: Final = rf"^{ID_CHARS}$"
_ID = re.compile(ID_PATTERN)

Id = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
"""A workspace, session or request id (pydantic field type)."""


def is_id(value: object) -> bool:
    """True when ``value`` is a string that is a valid id."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def id_or_none(value: object) -> str | None:
    """``value`` when it is a valid id, else None."""
    return value if isinstance(value, str) and _ID.fullmatch(value) is not None else None


def json_id_field(name: str) -> re.Pattern[bytes]:
    """Finds ``"<name>":"<id>"`` in compact JSON bytes; group 1 is the id.

    For hot paths that route raw event bytes without parsing them (the gateway's hub).
    """
    return re.compile(rf'"{re.escape(name)}":"({ID_CHARS})"'.encode())

"""Messages replayed to one stage (``mumu replay --to-stage``) arrive on the durable's
replay subject ``mumu.replay.<durable>.<ws>``; the handler sees their original subject.

The original is in ``Mumu-Replay-Subject``. Only the operator may publish replay subjects,
and still the runtime checks the original: one of the route's own subjects, in the same
workspace as the replay subject (a replay cannot move a message to another tenant).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from mumu.contracts import headers as h
from mumu.contracts.subject_check import covers
from mumu.contracts.subjects import is_replay, last_token
from mumu.runtime.errors import PermanentError


def handled_subject(
    subject: str, headers: Mapping[str, str], route_subjects: Sequence[str]
) -> str:
    """The subject the handler sees: ``subject``, or a replayed message's original one."""
    if not is_replay(subject):
        return subject
    original = headers.get(h.REPLAY_SUBJECT)
    if not original:
        raise PermanentError("missing_header", f"a replayed message without {h.REPLAY_SUBJECT}")
    if last_token(original) != last_token(subject):
        raise PermanentError(
            "schema_violation",
            f"replayed on {subject} with an original subject of another workspace: {original}",
        )
    if not any(covers(f, original) for f in route_subjects):
        raise PermanentError(
            "schema_violation", f"replayed {original} is not an input of this stage"
        )
    return original

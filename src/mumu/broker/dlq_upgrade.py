"""Stream updates that could drop stored messages, made safe.

* **Dead letters per workspace.** ``MUMU_DLQ`` stored letters on ``mumu.dlq.<stage>``;
  they now go to ``mumu.dlq.<stage>.<ws>`` with a per-subject limit. Applying that limit
  to a live stream makes the server delete the oldest messages of every subject over it
  (silently), so before the new config is applied each letter stored the old way is
  moved to its stage and workspace subject (the workspace is the last token of the
  letter's ``Mumu-Dlq-Subject``): the stream first takes both subject forms with no
  per-subject limit, the letters are re-published, then the old ones deleted.
* **No silent truncation.** ``refuse_truncation``: a stream update that sets or lowers
  ``max_msgs_per_subject`` is refused while a subject holds more than the new limit,
  naming the subjects (replay or purge them, then apply again).
"""

from __future__ import annotations

import logging
from typing import Any

import nats.js.errors
from nats.aio.client import Client as NATS

from mumu.broker.jsapi import api, stream_config
from mumu.contracts import headers as h
from mumu.contracts import subjects
from mumu.contracts.ids import id_or_none

log = logging.getLogger(__name__)

LEGACY_DLQ: str = f"{subjects.DLQ.prefix}.*"
"""Where dead letters were stored before they carried the workspace."""
DROPPED_ON_MOVE = frozenset({h.MSG_ID, "Nats-Expected-Stream", "Nats-Expected-Last-Sequence",
                             "Nats-Expected-Last-Subject-Sequence", "Nats-Expected-Last-Msg-Id"})
"""Headers a moved letter does not keep: its message id is still inside the stream's
duplicate window, so the move would be dropped as a duplicate."""


def moved_subject(subject: str, headers: dict[str, str]) -> str:
    """The subject of a letter stored on ``mumu.dlq.<stage>``: ``mumu.dlq.<stage>.<ws>``."""
    stage = subjects.last_token(subject)
    original = headers.get(h.DLQ_SUBJECT, "")
    ws = id_or_none(subjects.last_token(original)) or subjects.DLQ_NO_WORKSPACE
    return subjects.DLQ.stage(stage).for_workspace(ws)


async def move_legacy_letters(nc: NATS, desired: dict[str, Any]) -> int:
    """Move ``MUMU_DLQ``'s letters from ``mumu.dlq.<stage>`` to ``mumu.dlq.<stage>.<ws>``
    (before ``desired`` is applied); returns how many moved."""
    name = subjects.STREAM_DLQ
    live = await stream_config(nc, name)
    if live is None or LEGACY_DLQ not in (live.get("subjects") or []):
        return 0
    both = list(dict.fromkeys([*live["subjects"], *desired["subjects"]]))
    await api(nc, f"STREAM.UPDATE.{name}", {**live, "subjects": both})
    js = nc.jetstream()
    moved, seq = 0, 1
    while True:
        try:
            msg = await js.get_msg(name, seq=seq, subject=LEGACY_DLQ, next=True)
        except nats.js.errors.NotFoundError:
            break
        old_seq, subject = msg.seq or seq, msg.subject or ""
        headers = {k: v for k, v in (msg.headers or {}).items() if k not in DROPPED_ON_MOVE}
        await js.publish(moved_subject(subject, headers), msg.data or b"", headers=headers)
        await js.delete_msg(name, old_seq)
        moved, seq = moved + 1, old_seq + 1
    left = [s for s in both if s != LEGACY_DLQ]
    await api(nc, f"STREAM.UPDATE.{name}", {**live, "subjects": left})
    log.info("moved %d dead letters to mumu.dlq.<stage>.<ws>", moved)
    return moved


async def refuse_truncation(nc: NATS, live: dict[str, Any], desired: dict[str, Any]) -> None:
    """``RuntimeError`` when applying ``desired`` would delete messages of a subject over
    its new ``max_msgs_per_subject`` (the server drops them without a word)."""
    limit = int(desired.get("max_msgs_per_subject", -1))
    before = int(live.get("max_msgs_per_subject", -1))
    if limit <= 0 or 0 < before <= limit:
        return
    over: dict[str, int] = {}
    for wanted in desired.get("subjects") or []:
        info = await api(nc, f"STREAM.INFO.{desired['name']}", {"subjects_filter": wanted})
        counts: dict[str, int] = info.get("state", {}).get("subjects") or {}
        over.update({s: n for s, n in counts.items() if n > limit})
    if over:
        worst = ", ".join(f"{s} ({n})" for s, n in sorted(over.items())[:10])
        raise RuntimeError(
            f"stream {desired['name']}: {len(over)} subjects hold more than the new "
            f"max_msgs_per_subject {limit}, and the server would delete their oldest "
            f"messages: {worst}. Replay or purge them, then apply again")

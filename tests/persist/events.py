"""Builders of the events the persist stage consumes, and a settings merger."""

from __future__ import annotations

from nats.aio.client import Client as NATS

from mumu.contracts import headers as h
from mumu.contracts import subjects
from mumu.contracts.events import AnswerFinal, TranscriptFinal, derive_id, new_id
from mumu.settings import Settings
from mumu.stages.persist.settings import PersistSettings


def transcript(ws: str, text: str, session: str = "s1", rid: str | None = None) -> TranscriptFinal:
    rid = rid or new_id()
    return TranscriptFinal(
        event_id=derive_id(ws, rid, "transcribe", "final"), request_id=rid, workspace_id=ws,
        session_id=session, text=text, segments=[], language="en", language_probability=0.99,
        duration=1.5, model="tiny", compute_seconds=0.1,
    )


def answer(ws: str, question: str, text: str, session: str = "s1",
           rid: str | None = None) -> AnswerFinal:
    rid = rid or new_id()
    return AnswerFinal(
        event_id=derive_id(ws, rid, "reason", "final"), request_id=rid, workspace_id=ws,
        session_id=session, question=question, text=text, model="smol", language="en",
        total_seconds=0.5,
    )


async def publish(nc: NATS, event: TranscriptFinal | AnswerFinal, msg_id: str | None = None
                  ) -> None:
    pattern = (subjects.TRANSCRIPT_FINAL if isinstance(event, TranscriptFinal)
               else subjects.ANSWER_FINAL)
    await nc.jetstream().publish(
        pattern.for_workspace(event.workspace_id), event.model_dump_json().encode(),
        headers={h.MSG_ID: msg_id or event.event_id},
    )


def merged(nats_settings: Settings, pg_settings: Settings, **persist: object) -> Settings:
    """The NATS test settings with the database, keyring and persist settings of ``pg``."""
    return nats_settings.model_copy(update={
        "database_url": pg_settings.database_url,
        "database_admin_url": pg_settings.database_admin_url,
        "master_keys": pg_settings.master_keys,
        "persist": PersistSettings(**persist),  # type: ignore[arg-type]
    })


async def drained(nc: NATS, timeout: float = 10.0) -> None:
    """Wait until the persist consumer has nothing pending and nothing unacknowledged."""
    import asyncio

    from mumu.contracts.subjects import STREAM_RESULTS

    async with asyncio.timeout(timeout):
        while True:
            info = await nc.jetstream().consumer_info(STREAM_RESULTS, "persist-mumu-results")
            if not info.num_pending and not info.num_ack_pending:
                return
            await asyncio.sleep(0.05)

"""Fixtures of the persist tests: the stages' data keys, the records they write."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from mumu.crypto import Keyring
from mumu.db.datakeys import DataKeys
from mumu.db.records import TranscriptRecord


@pytest.fixture
def keys(keyring: Keyring) -> DataKeys:
    """The workspaces' data keys under the test keyring, as a stage holds them."""
    return DataKeys(keyring)


def said(text: str) -> TranscriptRecord:
    """A transcript of session ``s``, said now."""
    return TranscriptRecord(
        event_id=uuid.uuid4(), request_id=uuid.uuid4().hex, session_id="s", text=text,
        language="en", duration=1.0, model="tiny", occurred_at=datetime.now(UTC),
    )

"""A malformed control message (a cancel, a shred notice) is logged by its subject and
what is wrong with it, never with its bytes: pydantic's own message quotes the input,
which would carry whatever the message held into the log (the fast form; the run's
secrets scan in test_secrets_scan.py sends such messages through the real stages)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from mumu.contracts import subjects
from mumu.crypto import Keyring, MasterKey
from mumu.db.datakeys import DataKeys
from mumu.stages.persist.shred import ShredListener
from mumu.stages.reason.cancel import CancelRegistry

pytestmark = pytest.mark.security

WS = "11111111-1111-4111-8111-111111111111"
CANARY = b'{"request_id": "r1", "note": "the bathyscaphe password is hunter2"}'


@pytest.mark.parametrize(("listener", "pattern"), [
    (lambda: CancelRegistry(memory=60.0), subjects.CONTROL_CANCEL),
    (lambda: ShredListener(DataKeys(Keyring.parse(MasterKey.generate("k1").encoded()))),
     subjects.CONTROL_SHRED),
])
async def test_a_malformed_control_message_is_logged_without_its_bytes(
    listener: Any, pattern: subjects.SubjectPattern, caplog: pytest.LogCaptureFixture,
) -> None:
    subject = pattern.for_workspace(WS)
    with caplog.at_level(logging.WARNING):
        await listener().on_notice(subject, CANARY)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "malformed" in lines[0] and subject in lines[0], lines
    assert "bathyscaphe" not in lines[0] and "hunter2" not in lines[0]
    assert "workspace_id: Field required" in lines[0]  # what is wrong, by field

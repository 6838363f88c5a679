"""The shared vocabulary: ids, event types, and the $JS.ACK parser, each in one place."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from mumu.broker.ack_subject import (
    ack_fields,
    delivery_of_reply,
    feed_position,
    is_ack_subject,
)
from mumu.contracts import subjects as s
from mumu.contracts.event_types import RESULT_TYPES, EventType
from mumu.contracts.ids import id_or_none, is_id, json_id_field

SRC = Path(__file__).parents[2] / "src" / "mumu"


def test_ids_follow_the_subject_token_rule() -> None:
    assert is_id("ws_1-A")
    assert is_id("a" * 64)
    for bad in ("", "a" * 65, "a.b", "a*", "a b", "é", "a>", None, 7):
        assert not is_id(bad), bad
        assert id_or_none(bad) is None


def test_every_event_type_maps_to_its_subject_and_back() -> None:
    for kind in RESULT_TYPES:
        subject = kind.pattern.for_workspace("ws1")
        assert EventType.of_subject(subject) is kind
        assert subject == f"mumu.{kind.value}.ws1"
    assert EventType.of_subject(s.AUDIO_READY.for_workspace("ws1")) is None
    assert EventType.of_subject(s.PERSISTED.for_workspace("ws1")) is None


def test_ack_subject_v1_and_v2() -> None:
    v1 = "$JS.ACK.MUMU_RESULTS.gw.3.120.7.1700000000123456789.5"
    f = ack_fields(v1)
    assert (f.delivered, f.stream_seq, f.consumer_seq, f.pending) == (3, 120, 7, 5)
    assert f.timestamp == pytest.approx(1700000000.123456789)
    v2 = "$JS.ACK.hub.ACCHASH.MUMU_RESULTS.gw.2.121.8.1700000000000000000.0.tok"
    f2 = ack_fields(v2)
    assert (f2.delivered, f2.stream_seq, f2.consumer_seq, f2.pending) == (2, 121, 8, 0)
    assert is_ack_subject(v1) and not is_ack_subject("_INBOX.x") and not is_ack_subject(None)
    # the runtime's narrow reader agrees with the full one
    assert delivery_of_reply(v1) == (3, 120) and delivery_of_reply(v2) == (2, 121)
    # and so does the gateway feed's (None: a status message, not a stored one)
    assert feed_position(v1) == (120, 7, f.timestamp)
    assert feed_position(v2) == (121, 8, f2.timestamp)
    assert feed_position("") is None
    for bad in ("_INBOX.abc", "$JS.ACK.a.b.c", "$JS.ACK.S.C.x.1.2.3.4",
                "$JS.ACK.d.h.S.C.1.2.3.4", "$JS.NAK.S.C.1.2.3.4.5"):
        with pytest.raises(ValueError, match="not a JetStream ack subject"):
            ack_fields(bad)
        with pytest.raises(ValueError, match="not a JetStream ack subject"):
            delivery_of_reply(bad)
        assert feed_position(bad) is None, bad


def test_the_hub_finds_ids_in_raw_event_bytes_by_the_same_rule() -> None:
    find = json_id_field("session_id")
    match = find.search(b'{"event_id":"e","session_id":"s_1-A","x":1}')
    assert match is not None and match[1] == b"s_1-A"
    for bad in (b"", b"a.b", b"a" * 65, b"a b"):
        assert find.fullmatch(b'"session_id":"' + bad + b'"') is None, bad
    assert json_id_field("request_id").search(b'{"session_id":"s"}') is None


def test_the_id_rule_is_spelled_only_in_contracts_ids() -> None:
    # crypto/keyring.py: master key ids are a different rule (1-32 characters);
    spelled = {
        str(path.relative_to(SRC)) for path in SRC.rglob("*.py")
        if "A-Za-z0-9_-" in path.read_text()
    }
    assert spelled == {"contracts/ids.py", "crypto/keyring.py"}


def spelled_event_types(root: Path) -> dict[str, list[str]]:
    """Where a module outside ``contracts`` writes a dotted event type as a string
    literal ("transcript.final" …; "error" is too common a word to tell)."""
    dotted = {kind.value for kind in EventType if "." in kind.value}
    found: dict[str, list[str]] = {}
    for path in root.rglob("*.py"):
        if "contracts" in path.relative_to(root).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in dotted:
                found.setdefault(str(path.relative_to(root)), []).append(str(node.value))
    return found


def test_event_types_are_spelled_only_in_contracts(tmp_path: Path) -> None:
    assert spelled_event_types(SRC) == {}
    # the check finds a second vocabulary where one is added
    (tmp_path / "gateway").mkdir()
    (tmp_path / "gateway" / "hub.py").write_text('FINAL = "transcript.final"\n')
    assert spelled_event_types(tmp_path) == {"gateway/hub.py": ["transcript.final"]}

"""The selection's parts that need no server: times, server-side filters, overlaps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mumu.ops.selection import Selection, from_ns, overlaps, parse_time, to_ns

NOW = datetime(2026, 12, 3, 9, 30, tzinfo=UTC)


def test_times_are_rfc_3339_or_relative_to_now() -> None:
    assert parse_time("-15m", NOW) == NOW - timedelta(minutes=15)
    assert parse_time("2h", NOW) == NOW - timedelta(hours=2)
    assert parse_time("-1.5d", NOW) == NOW - timedelta(hours=36)
    assert parse_time("2026-12-03T08:00:00Z") == datetime(2026, 12, 3, 8, tzinfo=UTC)
    assert parse_time("2026-12-03T10:00:00+02:00") == datetime(2026, 12, 3, 8, tzinfo=UTC)
    with pytest.raises(ValueError, match="no time zone"):
        parse_time("2026-12-03T08:00:00")
    with pytest.raises(ValueError, match="not a time"):
        parse_time("yesterday")
    moment = datetime(2026, 12, 3, 8, 0, 0, 123456, tzinfo=UTC)
    assert from_ns(to_ns(moment) + 999) == moment  # exact, no float rounding


def test_a_selection_is_checked_and_made_absolute() -> None:
    sel = Selection.of("MUMU_RESULTS", since="-15m", until="-5m", now=NOW)
    assert sel.since == (NOW - timedelta(minutes=15)).isoformat()
    with pytest.raises(ValueError, match="before --from-seq"):
        Selection.of("MUMU_RESULTS", from_seq=5, to_seq=4)
    with pytest.raises(ValueError, match="before --since"):
        Selection.of("MUMU_RESULTS", since="-5m", until="-15m", now=NOW)
    with pytest.raises(ValueError, match="invalid workspace"):
        Selection.of("MUMU_RESULTS", workspace="a.*")


def test_server_filters_narrow_by_workspace() -> None:
    assert Selection.of("mumu.transcript.final.*", workspace="w").server_filters() == [
        "mumu.transcript.final.w"]
    assert Selection.of("MUMU_RESULTS").server_filters() == []
    assert Selection.of("MUMU_RESULTS", workspace="w").server_filters() == [
        "*.*.w", "*.*.*.w", "*.*.*.*.w"]
    # the check per message runs only where the server cannot decide
    assert not Selection.of("mumu.transcript.final.*").needs_check
    assert Selection.of("MUMU_RESULTS").needs_check  # could hold replay subjects
    assert Selection.of("mumu.transcript.final.*", request_id="r").needs_check


def test_filters_overlap_when_some_subject_matches_both() -> None:
    assert overlaps("mumu.>", "mumu.replay.x.*")
    assert overlaps("mumu.*.final.*", "mumu.transcript.final.w")
    assert not overlaps("mumu.transcript.final.*", "mumu.replay.>")
    assert not overlaps("a.b", "a.b.c")
    assert overlaps("a.*", "*.b")

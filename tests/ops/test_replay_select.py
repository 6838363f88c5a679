"""`mumu replay` selection, --dry-run, --to-file and --from-file on a real nats-server."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

from nats.aio.client import Client as NATS

from mumu.broker.credentials import AuthDir
from mumu.broker.embedded import EmbeddedNats
from mumu.broker.streams import apply_all
from mumu.contracts import headers as h
from mumu.contracts.subjects import STREAM_RESULTS, TRANSCRIPT_FINAL
from tests.conftest import operator_connection
from tests.ops.replaying import consumer_states, durables, mumu, mumu_json, store, transcript

WS_A, WS_B = "ws-a", "ws-b"


async def _stored(nc: NATS) -> list[tuple[int, str, str]]:
    """Six transcripts: (sequence, workspace, request id); B's second is sequence 4."""
    rows = []
    for i, ws in enumerate([WS_A, WS_A, WS_B, WS_B, WS_A, WS_B]):
        event = transcript(ws, f"question {i}")
        rows.append((await store(nc, event), ws, event.request_id))
    return rows


async def test_dry_run_counts_per_subject_with_sequences_times_and_a_sample(
    nats_server: EmbeddedNats, nc: NATS, streams: None,
) -> None:
    rows = await _stored(nc)
    result = await mumu_json(nats_server, "replay", "mumu.transcript.final.*", "--dry-run",
                             "--sample", "2")
    a, b = TRANSCRIPT_FINAL.for_workspace(WS_A), TRANSCRIPT_FINAL.for_workspace(WS_B)
    assert {s: d["count"] for s, d in result["subjects"].items()} == {a: 3, b: 3}
    assert (result["subjects"][a]["first_seq"], result["subjects"][a]["last_seq"]) == (1, 5)
    assert (result["subjects"][b]["first_seq"], result["subjects"][b]["last_seq"]) == (3, 6)
    info = await nc.jetstream().get_msg(STREAM_RESULTS, 6)
    assert info.time is not None
    assert datetime.fromisoformat(result["subjects"][b]["last_time"]) == info.time
    assert [s["seq"] for s in result["sample"]] == [1, 2]
    assert f"\"request_id\":\"{rows[0][2]}\"" in result["sample"][0]["data"]
    assert result["sample"][0]["headers"][h.MSG_ID]
    assert result["selected"] == 6 and result["read"] == 6

    # narrowed: by workspace, by sequence, by request id, by time
    by_ws = await mumu_json(nats_server, "replay", "MUMU_RESULTS", "--workspace", WS_B,
                            "--dry-run")
    assert {s: d["count"] for s, d in by_ws["subjects"].items()} == {b: 3}
    by_seq = await mumu_json(nats_server, "replay", "mumu.transcript.final.*", "--from-seq", "2",
                             "--to-seq", "4", "--dry-run")
    assert {s: d["count"] for s, d in by_seq["subjects"].items()} == {a: 1, b: 2}
    by_rid = await mumu_json(nats_server, "replay", "MUMU_RESULTS", "--request-id", rows[3][2],
                             "--dry-run")
    assert by_rid["selected"] == 1 and by_rid["sample"][0]["seq"] == 4
    fourth = await nc.jetstream().get_msg(STREAM_RESULTS, 4)
    assert fourth.time is not None
    since = fourth.time.astimezone(UTC).isoformat()
    by_time = await mumu_json(nats_server, "replay", "MUMU_RESULTS", "--since", since,
                              "--dry-run")
    assert [s["seq"] for s in by_time["sample"]] == [4, 5, 6]
    recent = await mumu_json(nats_server, "replay", "MUMU_RESULTS", "--since", "-10m",
                             "--until", since, "--dry-run")
    assert recent["selected"] == 4  # sequences 1..4
    none = await mumu_json(nats_server, "replay", "MUMU_RESULTS", "--until", "-1h", "--dry-run")
    assert none["selected"] == 0 and none["subjects"] == {}


async def test_dry_run_prints_a_table_and_a_sample_for_people(
    nats_server: EmbeddedNats, nc: NATS, streams: None,
) -> None:
    await _stored(nc)
    code, out, err = await mumu(nats_server, "replay", "mumu.transcript.final.ws-b", "--dry-run")
    assert code == 0, err
    header, row = out.splitlines()[:2]
    assert header.split()[:3] == ["subject", "count", "first"]
    assert row.split()[:3] == ["mumu.transcript.final.ws-b", "3", "3"]
    assert "#3 " in out and '"question 2"' in out.replace('"text":', "")
    assert "selected 3 of 3 messages read" in out


async def test_export_then_publish_into_another_deployment(
    nats_server: EmbeddedNats, nc: NATS, streams: None, tmp_path: Path,
) -> None:
    rows = await _stored(nc)
    out = tmp_path / "out.jsonl"
    summary = await mumu_json(nats_server, "replay", "mumu.transcript.final.*", "--workspace",
                              WS_A, "--to-file", str(out))
    assert summary["written"] == 3
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["seq"], r["subject"]) for r in lines] == [
        (seq, TRANSCRIPT_FINAL.for_workspace(ws)) for seq, ws, _ in rows if ws == WS_A]
    original = await nc.jetstream().get_msg(STREAM_RESULTS, 1)
    assert base64.b64decode(lines[0]["data"]) == original.data
    assert lines[0]["headers"] == dict(original.headers or {})
    assert datetime.fromisoformat(lines[0]["time"]) == original.time

    # a second deployment: its own server and users, streams applied
    users = AuthDir(tmp_path / "other-auth")
    users.ensure_services()
    users.render(())
    async with EmbeddedNats(tmp_path / "other", auth_file=users.auth_conf) as other:
        other_nc = await operator_connection(other.url, users)
        try:
            await apply_all(other_nc)
            env = {"MUMU_NATS__URL": other.url, "MUMU_NATS__CREDENTIALS": str(users.creds)}
            restored = await mumu_json(other, "replay", "--from-file", str(out), env=env)
            assert restored["published"] == 3
            js = other_nc.jetstream()
            copies = [await js.get_msg(STREAM_RESULTS, seq) for seq in (1, 2, 3)]
        finally:
            await other_nc.drain()
    assert [c.subject for c in copies] == [r["subject"] for r in lines]
    assert [c.data for c in copies] == [base64.b64decode(r["data"]) for r in lines]
    for copy, line in zip(copies, lines, strict=True):
        headers = dict(copy.headers or {})
        assert headers[h.REPLAY] == restored["replay_id"]
        assert headers[h.REPLAY_SOURCE] == f"{STREAM_RESULTS}:{line['seq']}"
        assert headers[h.TRACEPARENT] == line["headers"][h.TRACEPARENT]
        assert headers[h.MSG_ID] == f"{line['headers'][h.MSG_ID]}:replay:{restored['replay_id']}"


async def test_reads_leave_the_stages_durable_consumers_untouched(
    nats_server: EmbeddedNats, nc: NATS, streams: None, tmp_path: Path,
) -> None:
    await durables(nc)
    await _stored(nc)
    psub = await nc.jetstream().pull_subscribe_bind("persist-mumu-results", STREAM_RESULTS)
    for msg in await psub.fetch(2):  # the stage got somewhere: delivered 2, acked 1
        if msg.metadata.sequence.stream == 1:
            await msg.ack_sync()
    before = await consumer_states(nc, STREAM_RESULTS)
    assert set(before) == {"reason-mumu-results", "persist-mumu-results"}
    assert before["persist-mumu-results"][:4] == (2, 2, 1, 1)

    await mumu_json(nats_server, "replay", "MUMU_RESULTS", "--dry-run")
    await mumu_json(nats_server, "replay", "mumu.transcript.final.*", "--to-file",
                    str(tmp_path / "x.jsonl"))
    # the reads' ordered consumers are gone, the durables exactly as they were
    assert await consumer_states(nc, STREAM_RESULTS) == before

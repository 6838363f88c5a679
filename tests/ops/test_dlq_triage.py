"""`mumu dlq ls` counts dead letters by stage and reason; `mumu dlq show` says what a
binary body is (content type, size) instead of printing it. Letters from the real stages."""

from __future__ import annotations

import json
from pathlib import Path

from nats.aio.client import Client as NATS

from mumu.broker.embedded import EmbeddedNats
from mumu.contracts import headers as h
from mumu.contracts import subjects
from mumu.contracts.events import new_id
from mumu.settings import Settings
from mumu.stages.ingest.stage import build_stage as build_ingest
from mumu.stages.reason.stage import ReasonStage
from tests.audio.conftest import publish_audio
from tests.conftest import provision
from tests.harness import Collector, running
from tests.ops.replaying import mumu, mumu_json
from tests.reason.echo_backend import EchoBackend

BAD = Path(__file__).parents[1] / "data" / "bad"
WS = "ws-audio"


async def _letters(nc: NATS, settings: Settings) -> dict[str, str]:
    """Five bad recordings into ingest, one malformed text ask into reason; the request
    id of each, by file name."""
    expected: dict[str, str] = json.loads((BAD / "expected.json").read_text())
    rids = {}
    async with running(build_ingest(settings), settings), \
            running(ReasonStage(settings.reason, EchoBackend()), settings), \
            Collector(nc) as seen:
        for name in expected:
            rids[name] = await publish_audio(nc, (BAD / name).read_bytes())
        await provision(nc, WS)
        rid = new_id()
        await nc.jetstream().publish(subjects.INGEST_TEXT.for_workspace(WS),
                                     b'{"request_id": "' + rid.encode() + b'"}',
                                     headers={h.MSG_ID: rid})
        rids["text"] = rid
        await seen.wait_count("mumu.dlq.", len(expected) + 1, timeout=30)
    return rids


async def test_dlq_ls_counts_letters_by_stage_and_reason(
    nats_server: EmbeddedNats, nc: NATS, streams: None, settings: Settings,
) -> None:
    await _letters(nc, settings)
    listed = await mumu_json(nats_server, "dlq", "ls")
    counts = {(g["stage"], g["code"]): g["count"] for g in listed["groups"]}
    assert counts == {("ingest", "unsupported_audio"): 3, ("ingest", "empty_audio"): 2,
                      ("reason", "schema_violation"): 1}
    assert listed["total"] == 6
    unsupported = next(g for g in listed["groups"] if g["code"] == "unsupported_audio")
    assert unsupported["subjects"] == {"mumu.ingest.audio.*": 3}
    sizes = sum((BAD / n).stat().st_size for n in ("random.wav", "image.wav",
                                                     "truncated_header.wav"))
    assert unsupported["bytes"] == sizes  # counted without fetching the bodies
    assert unsupported["first_seq"] < unsupported["last_seq"]

    only_reason = await mumu_json(nats_server, "dlq", "ls", "--stage", "reason")
    assert [(g["stage"], g["count"]) for g in only_reason["groups"]] == [("reason", 1)]

    code, out, err = await mumu(nats_server, "dlq", "ls")
    assert code == 0, err
    rows = {tuple(line.split()[:3]) for line in out.splitlines()[1:]}
    assert ("ingest", "unsupported_audio", "3") in rows
    assert ("reason", "schema_violation", "1") in rows
    assert out.splitlines()[-1] == "6 dead letters"


async def test_dlq_show_gives_content_type_and_size_of_a_binary_body(
    nats_server: EmbeddedNats, nc: NATS, streams: None, settings: Settings,
) -> None:
    rids = await _letters(nc, settings)
    each = json.loads((await mumu(nats_server, "dlq", "ls", "--each", "--json"))[1])
    seq_of = {row[h.DLQ_ORIGINAL_PREFIX + h.REQUEST_ID]: row["seq"] for row in each
              if h.DLQ_ORIGINAL_PREFIX + h.REQUEST_ID in row}

    silence = (BAD / "silence.wav").read_bytes()  # a real WAV (no speech in it)
    shown = await mumu_json(nats_server, "dlq", "show", str(seq_of[rids["silence.wav"]]))
    assert shown["body"] == {"size": len(silence), "omitted": False,
                             "content_type": "audio/wav", "binary": True, "detected": "wav"}
    code, out, err = await mumu(nats_server, "dlq", "show", str(seq_of[rids["silence.wav"]]))
    assert code == 0, err
    assert f"body: audio/wav, {len(silence)} bytes (binary, not shown)" in out
    assert "RIFF" not in out  # the bytes are not dumped on the terminal

    noise = await mumu_json(nats_server, "dlq", "show", str(seq_of[rids["random.wav"]]))
    assert noise["body"]["binary"] is True
    assert noise["body"]["content_type"] == "audio/wav"  # what the producer declared
    assert noise["body"]["size"] == (BAD / "random.wav").stat().st_size

"""Checked-in schemas and stream configs must match the code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from pydantic import Field

from mumu.bench.stream import BENCH_HOPS, STREAM_BENCH, bench_stream_config
from mumu.broker.intake import ingest_replay_subjects, intake_config
from mumu.broker.streams import load_stream_configs
from mumu.contracts import catalog, events, subjects
from mumu.contracts.schemas import schema_drift
from mumu.contracts.subject_check import DECLARED_PATTERNS, SAMPLE_WORKSPACE, subject_problems

ROOT = Path(__file__).parents[2]


def test_checked_in_schemas_match_the_models() -> None:
    assert schema_drift(ROOT / "schemas") == []


def test_schema_drift_is_detected_on_a_mutated_copy(tmp_path: Path) -> None:
    copy = tmp_path / "schemas"
    shutil.copytree(ROOT / "schemas", copy)
    # 1) a file edited by hand
    path = copy / "TextAsk.json"
    doc = json.loads(path.read_text())
    doc["properties"]["text"]["maxLength"] = 1
    path.write_text(json.dumps(doc))
    # 2) a model that changed without re-exporting
    class TranscriptFinal(events.TranscriptFinal):
        extra_field: int = Field(default=0)

    channels = tuple(
        catalog.Channel(c.pattern, TranscriptFinal, c.summary) if c.model is events.TranscriptFinal
        else c
        for c in catalog.CHANNELS
    )
    problems = schema_drift(copy, channels)
    assert "TextAsk.json: differs from the models" in problems
    assert "TranscriptFinal.json: differs from the models" in problems
    assert "asyncapi.json: differs from the models" in problems
    (copy / "AudioReady.json").unlink()
    assert "AudioReady.json: missing" in schema_drift(copy)


def test_asyncapi_names_every_subject_constant() -> None:
    doc = json.loads((ROOT / "schemas" / "asyncapi.json").read_text())
    assert doc["asyncapi"] == "3.0.0"
    addresses = {c["address"].split(".{")[0] for c in doc["channels"].values()}
    assert {ch.pattern.prefix for ch in catalog.CHANNELS} == addresses
    assert addresses == {p.prefix for p in subjects.ALL_PATTERNS}


def _intake() -> dict:
    return intake_config(SAMPLE_WORKSPACE, directory=ROOT / "streams")


def test_every_subject_constant_is_stored_by_exactly_one_stream() -> None:
    assert subject_problems(load_stream_configs(ROOT / "streams"), workspace_configs=[_intake()]) == []


def test_ingest_subjects_are_stored_per_workspace_and_ingest_only_sources_them() -> None:
    configs = load_stream_configs(ROOT / "streams")
    ingest = next(c for c in configs if c["name"] == subjects.STREAM_INGEST)
    # its own subjects are only the replay subjects of the stages that read it
    assert ingest["subjects"] == ingest_replay_subjects() and ingest["sources"] == []
    # a sourced Nats-Msg-Id must not be deduped again across workspaces
    assert ingest["duplicate_window"] == 0
    intake = intake_config("ws-a", max_bytes=1234, directory=ROOT / "streams")
    assert intake["name"] == subjects.intake_stream("ws-a")
    assert intake["subjects"] == [subjects.INGEST_AUDIO.for_workspace("ws-a"),
                                  subjects.INGEST_TEXT.for_workspace("ws-a"),
                                  subjects.INGEST_LIVE.for_workspace("ws-a"),
                                  f"{subjects.LIVE_CHUNK_PREFIX}.*.ws-a"]
    assert intake["max_bytes"] == 1234
    # longer than the gateway's wait (120 s): a retry after a 504 is still a duplicate
    assert intake["duplicate_window"] == 600_000_000_000
    # without the template, the ingest subjects are stored by no stream
    problems = subject_problems(configs)
    assert "mumu.ingest.audio: stored by no stream (want exactly one)" in problems
    # a template subject that names another workspace, or a wildcard, is caught
    bad = {**_intake(), "subjects": ["mumu.ingest.audio.*", "mumu.ingest.text.x"]}
    assert any("mumu.ingest.audio.* is not a constant" in p
               for p in subject_problems(configs, workspace_configs=[bad]))


def test_the_bench_subjects_are_stored_by_the_bench_stream_only() -> None:
    # the benchmarks' subjects are not contracts: their own stream, not one of streams/
    configs = load_stream_configs(ROOT / "streams")
    assert STREAM_BENCH not in {c["name"] for c in configs}
    assert subject_problems([bench_stream_config()], BENCH_HOPS) == []
    both = [*configs, bench_stream_config()]
    assert subject_problems(both, (*DECLARED_PATTERNS, *BENCH_HOPS),
                            workspace_configs=[_intake()]) == []
    assert not {p.prefix for p in BENCH_HOPS} & {p.prefix for p in subjects.ALL_PATTERNS}


def test_subject_drift_is_detected_on_a_mutated_copy(tmp_path: Path) -> None:
    configs = load_stream_configs(ROOT / "streams")
    results = next(c for c in configs if c["name"] == subjects.STREAM_RESULTS)
    results["subjects"].remove("mumu.answer.delta.*")
    results["subjects"].append("mumu.answer.typo.*")
    problems = subject_problems(configs)
    assert "mumu.answer.delta: stored by no stream (want exactly one)" in problems
    assert "MUMU_RESULTS: subject mumu.answer.typo.* matches no constant" in problems
    # a subject stored twice is as wrong as a subject stored nowhere
    configs.append({"name": "MUMU_EXTRA", "subjects": ["mumu.transcript.final.*"]})
    assert any(p.startswith("mumu.transcript.final: stored by") for p in subject_problems(configs))


def test_stream_files_are_jetstream_stream_configs() -> None:
    for config in [*load_stream_configs(ROOT / "streams"), _intake()]:
        assert config["storage"] in {"file", "memory"}
        # a stream that only sources others leaves dedupe to them (MUMU_INGEST; its own
        # subjects are only the stages' replay subjects, published by the operator)
        assert config["duplicate_window"] > 0 or (
            "sources" in config and all(subjects.is_replay(s) for s in config["subjects"]))
        assert config["max_age"] > 0
        assert config["retention"] == "limits"


def test_asyncapi_says_which_channels_mumu_receives_and_which_it_sends() -> None:
    doc = json.loads((ROOT / "schemas" / "asyncapi.json").read_text())
    actions = {op["channel"]["$ref"].rsplit("/", 1)[1]: op["action"]
               for op in doc["operations"].values()}
    assert {c for c, a in actions.items() if a == "receive"} == {
        "mumu_ingest_audio", "mumu_ingest_text", "mumu_ingest_live", "mumu_control_cancel"}
    assert actions["mumu_transcript_final"] == actions["mumu_answer_delta"] == "send"
    assert actions["mumu_dlq"] == actions["mumu_error"] == "send"

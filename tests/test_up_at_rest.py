"""`mumu up` encrypts its JetStream store by default: a generated key (mode 0600) that is
in no log, no config and no child's environment but the server's; a lost key is refused."""

from __future__ import annotations

import asyncio
import os
import re
import stat
import sys
from pathlib import Path

import pytest

from mumu.up.store_key import KEY_FILE
from tests.test_up import ask, children, start_up, stop_up

pytestmark = pytest.mark.slow


def files_with(root: Path, needle: bytes, skip: Path) -> list[Path]:
    return [p for p in root.rglob("*")
            if p.is_file() and p != skip and needle in p.read_bytes()]


def readable(root: Path, word: bytes) -> list[Path]:
    """Files (``root`` or under it) holding ``word`` (any case) between printable bytes,
    as plain text has it."""
    pattern = re.compile(rb"[\x20-\x7e]{3}" + re.escape(word) + rb"[\x20-\x7e]{3}", re.I)
    files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
    return [p for p in files if pattern.search(p.read_bytes())]


async def test_up_encrypts_its_store_with_a_private_key_it_keeps_out_of_logs_and_needs(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / ".mumu"
    proc, lines, _ = await start_up(data_dir)
    try:
        key_file = data_dir / KEY_FILE
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        key = key_file.read_bytes().strip()
        result = await ask(lines["gateway"], lines["api key"], "What is the capital of France?")
        assert "paris" in str(result["answer"]).lower(), result
        stage_env = Path(f"/proc/{children(data_dir)['reason']}/environ").read_bytes()
        assert key not in stage_env, "only nats-server gets the key"
    finally:
        assert await stop_up(proc) == 0
    store = data_dir / "nats" / "jetstream"
    streams = [p for p in store.glob("jetstream/*/streams/*") if p.is_dir()]
    assert {p.name for p in streams} >= {"MUMU_RESULTS", "KV_mumu-sessions", "OBJ_mumu-audio"}
    assert all((p / "meta.key").exists() for p in streams), "every stream is encrypted"
    assert readable(store, b"capital") == [] and readable(store, b"paris") == []
    logs = [data_dir / "logs", data_dir / "nats" / "nats-server.log", tmp_path / "up.log"]
    for word in (b"capital", b"france", b"paris"):  # no question or answer text in any log
        assert [hit for log in logs for hit in readable(log, word)] == [], word
    assert files_with(tmp_path, key, skip=key_file) == []  # logs, configs, the store

    proc, lines, _ = await start_up(data_dir)  # the same key opens the same store
    try:
        assert key_file.read_bytes().strip() == key
        assert "workspace" not in lines, "the store and the database were reused"
    finally:
        assert await stop_up(proc) == 0
    await refuses_the_store_without_its_key(tmp_path, data_dir)


async def refuses_the_store_without_its_key(tmp_path: Path, data_dir: Path) -> None:
    """An encrypted store whose key file is gone: ``mumu up`` stops with a clear error and
    makes no new key over it."""
    (data_dir / KEY_FILE).unlink()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUMU_")}
    env.update({"MUMU_DATA_DIR": str(data_dir), "MUMU_NATS__EMBEDDED_PORT": "0"})
    again = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mumu", "up", env=env, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(again.communicate(), 60)
    assert again.returncode == 1, (out, err)
    assert b"is encrypted but its key file" in err and b"MUMU_NATS__JS_KEY" in err
    assert not (data_dir / KEY_FILE).exists(), "no new key was made over the old store"

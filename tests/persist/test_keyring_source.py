"""Where the master keyring comes from: ``MUMU_MASTER_KEYS``; the development keyring file
only with `mumu up`'s embedded PostgreSQL, and never from a relative path."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import asyncpg
import pytest

from mumu.cli.main import main
from mumu.crypto import MasterKey
from mumu.db.bootstrap import KEYRING_FILE, STATE_FILE, bootstrap
from mumu.settings import Settings


async def test_up_with_an_external_database_needs_master_keys(
    tmp_path: Path, pg_admin_url: str, pg_app_url: str,
) -> None:
    data_dir = tmp_path / "mumu"
    settings = Settings(data_dir=data_dir, database_url=pg_app_url,  # type: ignore[arg-type]
                        database_admin_url=pg_admin_url, master_keys=None)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="MUMU_MASTER_KEYS is not set: an external database"):
        await bootstrap(settings.database, settings.master_keys, data_dir)
    assert not (data_dir / KEYRING_FILE).exists()  # no development keyring was made


async def test_mumu_up_refuses_to_start_on_an_external_database_without_master_keys(
    tmp_path: Path, pg_admin_url: str, pg_app_url: str,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUMU_")}
    env.update({"MUMU_DATA_DIR": str(tmp_path / "mumu"), "MUMU_DATABASE_URL": pg_app_url,
                "MUMU_DATABASE_ADMIN_URL": pg_admin_url, "MUMU_NATS__EMBEDDED_PORT": "0",
                "MUMU_GATEWAY__PORT": "0"})
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mumu", "up", env=env, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode == 1, (out + err).decode()[-2000:]
    assert b"MUMU_MASTER_KEYS is not set: an external database" in err
    assert not (tmp_path / "mumu" / KEYRING_FILE).exists()


def _plant(folder: Path, admin_url: str) -> MasterKey:
    """A development keyring and an embedded-database state file in ``folder``."""
    folder.mkdir(parents=True)
    planted = MasterKey.generate("planted")
    (folder / KEYRING_FILE).write_text(planted.encoded() + "\n")
    (folder / STATE_FILE).write_text(json.dumps({"admin_url": admin_url, "app_url": ""}))
    return planted


def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("MUMU_"):
            monkeypatch.delenv(name)


def test_the_cli_never_reads_a_relative_development_keyring(
    tmp_path: Path, pg_admin_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    _clean_env(monkeypatch)
    monkeypatch.chdir(tmp_path)
    _plant(tmp_path / ".mumu", pg_admin_url)  # the default MUMU_DATA_DIR is ".mumu"

    assert main(["workspace", "create", "planted"]) == 1
    err = capsys.readouterr().err
    assert "MUMU_MASTER_KEYS is not set" in err
    assert "only from an absolute MUMU_DATA_DIR" in err
    assert asyncio.run(_count_workspaces(pg_admin_url)) == 0  # nothing was made with the planted key

    # named absolutely, `mumu up`'s embedded layout is used, and its key wraps
    monkeypatch.setenv("MUMU_DATA_DIR", str(tmp_path / ".mumu"))
    assert main(["workspace", "create", "dev"]) == 0
    assert asyncio.run(_master_key_ids(pg_admin_url)) == ["planted"]


def test_the_cli_refuses_the_development_keyring_with_an_external_database(
    tmp_path: Path, pg_admin_url: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _clean_env(monkeypatch)
    data_dir = tmp_path / "mumu"
    _plant(data_dir, pg_admin_url)
    monkeypatch.setenv("MUMU_DATA_DIR", str(data_dir))
    monkeypatch.setenv("MUMU_DATABASE_ADMIN_URL", pg_admin_url)
    assert main(["workspace", "create", "external"]) == 1
    assert "an external database needs MUMU_MASTER_KEYS" in capsys.readouterr().err
    assert asyncio.run(_count_workspaces(pg_admin_url)) == 0


async def _count_workspaces(admin_url: str) -> int:
    conn = await asyncpg.connect(admin_url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM mumu.workspaces"))
    finally:
        await conn.close()


async def _master_key_ids(admin_url: str) -> list[str]:
    conn = await asyncpg.connect(admin_url)
    try:
        rows = await conn.fetch("SELECT DISTINCT master_key_id FROM mumu.data_keys")
        return [r["master_key_id"] for r in rows]
    finally:
        await conn.close()

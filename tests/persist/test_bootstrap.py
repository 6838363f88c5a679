"""``bootstrap`` (the database side of ``mumu up``) on an embedded PostgreSQL."""

from __future__ import annotations

import logging
import stat
import time

import asyncpg
import pytest

from mumu.crypto import Keyring
from mumu.db.bootstrap import KEYRING_FILE, bootstrap
from mumu.db.workspaces import resolve_api_key
from mumu.settings import Settings
from tests.pg_fixtures import pgdata_dir


async def test_first_start_creates_default_workspace_and_second_start_reuses_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    with pgdata_dir() as folder:
        data_dir = folder.parent / "mumu"
        settings = Settings(data_dir=data_dir, database_url=None, database_admin_url=None,
                            master_keys=None)
        dev = await bootstrap(settings.database, settings.master_keys, data_dir)
        try:
            ws_line, key_line = dev.announce
            workspace_id = ws_line.removeprefix("workspace: ")
            api_key = key_line.removeprefix("api key: ")
            keyring_file = data_dir / KEYRING_FILE
            assert stat.S_IMODE(keyring_file.stat().st_mode) == 0o600
            assert any("DEVELOPMENT ONLY" in r.getMessage() for r in caplog.records)
            secret = keyring_file.read_text().strip().partition(":")[2]
            assert all(secret not in r.getMessage() for r in caplog.records)
            assert Keyring.parse(dev.env["MUMU_MASTER_KEYS"]).primary_id == "dev1"

            app_url = dev.env["MUMU_DATABASE_URL"]
            conn = await asyncpg.connect(app_url)
            try:
                row = await conn.fetchrow(
                    "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"
                )
                assert row is not None
                assert (row["rolsuper"], row["rolbypassrls"]) == (False, False)
                assert await resolve_api_key(conn, api_key) == workspace_id
            finally:
                await conn.close()
            with pytest.raises(asyncpg.InvalidPasswordError):
                await asyncpg.connect(app_url.replace("mumu_app:", "mumu_app:wrong"))
        finally:
            await dev.stop()

        started = time.monotonic()
        again = await bootstrap(settings.database, settings.master_keys, data_dir)
        try:
            elapsed = time.monotonic() - started
            assert again.announce == []  # no second workspace
            assert again.env == dev.env
            conn = await asyncpg.connect(again.env["MUMU_DATABASE_URL"])
            try:
                assert await resolve_api_key(conn, api_key) == workspace_id
            finally:
                await conn.close()
        finally:
            await again.stop()
        assert elapsed < 3.0

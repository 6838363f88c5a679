"""The shred state in PostgreSQL (sql/0006): no code path gives a shredded workspace a key."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from mumu.db import keyadmin
from mumu.db.datakeys import DataKeys, WorkspaceShreddedError
from mumu.db.migrate import migrations
from mumu.db.pool import workspace_tx
from mumu.db.records import write_records
from tests.persist.conftest import said
from tests.pg_fixtures import WorkspaceFactory

INSERT_KEY = ("INSERT INTO mumu.data_keys (workspace_id, version, master_key_id, wrapped) "
              "VALUES ($1, 9, 'k1', '\\x00'::bytea)")


async def test_the_database_refuses_a_data_key_for_a_shredded_workspace(
    app_pool: asyncpg.Pool, admin_conn: asyncpg.Connection, keys: DataKeys,
    workspace: WorkspaceFactory,
) -> None:
    gone, _ = await workspace("gone")
    kept, _ = await workspace("kept")
    await keyadmin.shred(admin_conn, gone)
    # not only the code: the database itself refuses the stages' role the key
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        async with workspace_tx(app_pool, gone) as conn:
            await conn.execute(INSERT_KEY, gone)
    # the application role can read the state of its own workspace, never change it
    async with workspace_tx(app_pool, gone) as conn:
        assert await conn.fetchval("SELECT count(*) FROM mumu.workspace_shreds") == 1
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("UPDATE mumu.workspace_shreds SET reenabled_at = now()")
    async with workspace_tx(app_pool, kept) as conn:  # and sees no other workspace's
        assert await conn.fetchval("SELECT count(*) FROM mumu.workspace_shreds") == 0

    # a data-key rotation skips it (it used to give every workspace a new version)
    report = await keyadmin.rotate(admin_conn, keys, new_data_keys=True)
    assert report.new_data_keys == 1
    versions = await admin_conn.fetch(
        "SELECT workspace_id::text AS ws, max(version) AS v FROM mumu.data_keys GROUP BY 1")
    assert {r["ws"]: r["v"] for r in versions} == {gone: 1, kept: 2}
    with pytest.raises(WorkspaceShreddedError):
        await write_records(app_pool, keys, gone, [said("refused")])

    # a second shred changes nothing; re-enabling twice or an unknown workspace is refused
    again = await keyadmin.shred(admin_conn, gone)
    assert (again.data_keys, again.rows) == (0, 0)
    assert (await keyadmin.reenable(admin_conn, keys, gone)).data_key_version == 2
    with pytest.raises(ValueError, match="is not shredded"):
        await keyadmin.reenable(admin_conn, keys, gone)
    with pytest.raises(LookupError):
        await keyadmin.reenable(admin_conn, keys, str(uuid.uuid4()))
    await write_records(app_pool, keys, gone, [said("stored again")])


async def test_a_workspace_shredded_before_the_migration_stays_shredded(
    app_pool: asyncpg.Pool, admin_conn: asyncpg.Connection, keys: DataKeys,
    workspace: WorkspaceFactory,
) -> None:
    """Before 0006 a shred left no state: a workspace whose every key is shredded is
    marked by the migration; one that made itself a new key since is left alone."""
    old, _ = await workspace("shredded long ago")
    revived, _ = await workspace("wrote after its shred")
    for ws in (old, revived):
        await keyadmin.shred(admin_conn, ws)
    await admin_conn.execute("DELETE FROM mumu.workspace_shreds")  # as before 0006
    await write_records(app_pool, keys, revived, [said("new key v2")])  # the old way
    [sql] = [m.sql for m in migrations() if m.name == "0006_shred_final"]
    async with admin_conn.transaction():
        await admin_conn.execute(sql)
    marked = await admin_conn.fetch("SELECT workspace_id::text AS ws FROM mumu.workspace_shreds")
    assert [r["ws"] for r in marked] == [old]
    with pytest.raises(WorkspaceShreddedError):
        await write_records(app_pool, keys, old, [said("refused")])
    await write_records(app_pool, keys, revived, [said("still writes")])

"""Master-key rotation, data-key rotation, re-encryption and crypto-shredding."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from mumu.cli.main import main
from mumu.crypto import DecryptionError, Keyring, MasterKey
from mumu.db import keyadmin
from mumu.db.bootstrap import STATE_FILE
from mumu.db.datakeys import DataKeys, DataKeyShreddedError, WorkspaceShreddedError
from mumu.db.history import session_history
from mumu.db.pool import workspace_tx
from mumu.db.records import (
    INSERT_TRANSCRIPTS,
    AnswerRecord,
    encrypt_columns,
    write_records,
)
from tests.persist.conftest import said
from tests.pg_fixtures import WorkspaceFactory


def answered(question: str, text: str) -> AnswerRecord:
    return AnswerRecord(
        event_id=uuid.uuid4(), request_id=uuid.uuid4().hex, session_id="s", question=question,
        text=text, language="en", model="smol", cancelled=False, prompt_tokens=1,
        completion_tokens=2, total_seconds=0.1, occurred_at=datetime.now(UTC),
    )


async def texts(pool: asyncpg.Pool, keys: Keyring | DataKeys, ws: str) -> list[str]:
    return sorted(i.text for i in await session_history(pool, keys, ws, "s"))


async def test_rows_before_and_after_rotation_decrypt(
    app_pool: asyncpg.Pool, admin_conn: asyncpg.Connection, keyring: Keyring,
    master_keys: str, workspace: WorkspaceFactory,
) -> None:
    ws, _ = await workspace()
    await write_records(app_pool, DataKeys(keyring), ws, [said("before"), answered("q", "a1")])

    # a new master key becomes primary, the old one stays in the ring for now
    new_master = MasterKey.generate("k2")
    rotated = Keyring.parse(f"{new_master.encoded()},{master_keys}")
    report = await keyadmin.rotate(admin_conn, DataKeys(rotated), new_data_keys=True)
    assert (report.rewrapped, report.new_data_keys, report.primary) == (1, 1, "k2")
    await write_records(app_pool, DataKeys(rotated), ws, [said("after"), answered("q", "a2")])

    # after the rewrap the old master key is no longer needed at all
    only_new = Keyring([new_master])
    assert await texts(app_pool, only_new, ws) == ["a1", "a2", "after", "before"]
    wrapped_by = await admin_conn.fetch("SELECT DISTINCT master_key_id FROM mumu.data_keys")
    assert [r["master_key_id"] for r in wrapped_by] == ["k2"]
    versions = await admin_conn.fetch(
        "SELECT key_version, count(*) AS n FROM mumu.transcripts GROUP BY 1 ORDER BY 1"
    )
    assert [(r["key_version"], r["n"]) for r in versions] == [(1, 1), (2, 1)]

    # re-encryption moves old rows to the newest data key; a second run has nothing to do
    progress: list[tuple[str, int]] = []
    moved = await keyadmin.reencrypt(admin_conn, DataKeys(only_new), batch=1,
                                     progress=lambda w, n: progress.append((w, n)))
    assert moved == 2  # one transcript, one answer
    assert progress[-1] == (ws, 2)
    assert await keyadmin.reencrypt(admin_conn, DataKeys(only_new)) == 0
    assert await texts(app_pool, only_new, ws) == ["a1", "a2", "after", "before"]
    assert await admin_conn.fetchval("SELECT min(key_version) FROM mumu.answers") == 2


async def test_shred_makes_exactly_that_workspace_unreadable(
    app_pool: asyncpg.Pool, admin_conn: asyncpg.Connection, keys: DataKeys, keyring: Keyring,
    workspace: WorkspaceFactory,
) -> None:
    a, _ = await workspace("A")
    b, _ = await workspace("B")
    await write_records(app_pool, keys, a, [said("a secret"), answered("a q", "a answer")])
    await write_records(app_pool, keys, b, [said("b secret")])

    report = await keyadmin.shred(admin_conn, a)
    assert (report.data_keys, report.transcripts, report.answers, report.rows) == (1, 1, 1, 2)

    with pytest.raises(DataKeyShreddedError, match=f"data key v1 of workspace {a} was shredded"):
        await session_history(app_pool, keys, a, "s")  # even with the key cached in memory
    assert await texts(app_pool, keyring, b) == ["b secret"]

    # shred is final: nothing more of the workspace is stored, no new key appears...
    with pytest.raises(WorkspaceShreddedError, match=f"workspace {a} was shredded"):
        await write_records(app_pool, keys, a, [said("after shred")])
    assert await admin_conn.fetchval(
        "SELECT max(version) FROM mumu.data_keys WHERE workspace_id = $1", a) == 1
    # ...until an operator re-enables it: a new data key; only what was shredded is gone
    assert (await keyadmin.reenable(admin_conn, keys, a)).data_key_version == 2
    await write_records(app_pool, keys, a, [said("after shred")])
    with pytest.raises(DataKeyShreddedError):
        await session_history(app_pool, keys, a, "s")
    with pytest.raises(LookupError):
        await keyadmin.shred(admin_conn, str(uuid.uuid4()))


async def test_reencrypt_skips_a_shredded_workspace_without_making_it_a_key(
    app_pool: asyncpg.Pool, admin_conn: asyncpg.Connection, keys: DataKeys,
    workspace: WorkspaceFactory,
) -> None:
    gone, _ = await workspace("gone")
    kept, _ = await workspace("kept")
    await write_records(app_pool, keys, gone, [said("erased")])
    await write_records(app_pool, keys, kept, [said("kept")])
    await keyadmin.shred(admin_conn, gone)
    assert await keyadmin.reencrypt(admin_conn, keys) == 0
    usable = await admin_conn.fetchval(
        "SELECT count(*) FROM mumu.data_keys WHERE workspace_id = $1 AND wrapped IS NOT NULL",
        gone)
    assert usable == 0  # no fresh data key appeared for the erased workspace
    assert await texts(app_pool, keys, kept) == ["kept"]


async def test_shred_waits_for_a_writer_holding_the_key_and_counts_its_rows(
    app_pool: asyncpg.Pool, admin_conn: asyncpg.Connection, keys: DataKeys,
    workspace: WorkspaceFactory,
) -> None:
    """A persist transaction that read the key before the shred commits its rows before
    the shred counts: the report is exact and no row lands under a key already shredded."""
    ws, _ = await workspace()
    async with workspace_tx(app_pool, ws) as conn:
        key = await keys.active(conn, ws)
        shredding = asyncio.create_task(keyadmin.shred(admin_conn, ws))
        await asyncio.sleep(0.5)
        assert not shredding.done(), "the shred must wait for the writer holding the key"
        transcripts, _ = encrypt_columns(key, [said("in flight")])
        await conn.execute(INSERT_TRANSCRIPTS, ws, key.version, *transcripts)
    report = await asyncio.wait_for(shredding, 10)
    assert (report.data_keys, report.transcripts) == (1, 1)
    with pytest.raises(DataKeyShreddedError):
        await session_history(app_pool, keys, ws, "s")

    # a writer that reads the key while a shred holds it stores nothing afterwards
    # (before shred was final, it made itself a new key v3)
    await keyadmin.reenable(admin_conn, keys, ws)
    await write_records(app_pool, keys, ws, [said("under v2")])
    async with workspace_tx(admin_conn, ws) as shred_tx:
        await shred_tx.execute("SELECT 1 FROM mumu.data_keys WHERE workspace_id = $1 "
                               "AND wrapped IS NOT NULL FOR UPDATE", ws)
        writing = asyncio.create_task(write_records(app_pool, keys, ws, [said("after")]))
        await asyncio.sleep(0.3)
        assert not writing.done()
        await shred_tx.execute("UPDATE mumu.data_keys SET wrapped = NULL, master_key_id = "
                               "NULL, shredded_at = now() WHERE workspace_id = $1", ws)
        await shred_tx.execute("UPDATE mumu.workspace_shreds SET reenabled_at = NULL, "
                               "shredded_at = now() WHERE workspace_id = $1", ws)
    with pytest.raises(WorkspaceShreddedError):
        await asyncio.wait_for(writing, 10)
    assert await admin_conn.fetchval(
        "SELECT max(version) FROM mumu.data_keys WHERE workspace_id = $1", ws) == 2
    assert await admin_conn.fetchval(
        "SELECT count(*) FROM mumu.transcripts WHERE workspace_id = $1", ws) == 2


def test_cli_workspace_and_keys_commands(
    pg_admin_url: str, pg_app_url: str, master_keys: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], tmp_path: Path,
) -> None:
    monkeypatch.setenv("MUMU_DATABASE_ADMIN_URL", pg_admin_url)
    monkeypatch.setenv("MUMU_DATABASE_URL", pg_app_url)
    monkeypatch.setenv("MUMU_MASTER_KEYS", master_keys)

    assert main(["migrate"]) == 0
    assert "database is up to date" in capsys.readouterr().out

    assert main(["workspace", "create", "acme"]) == 0
    out = capsys.readouterr().out
    ws = re.search(r"^workspace: (\S+)$", out, re.M).group(1)  # type: ignore[union-attr]
    api_key = re.search(r"^api key: (\S+)$", out, re.M).group(1)  # type: ignore[union-attr]
    assert api_key.startswith("mumu_")

    assert main(["workspace", "ls"]) == 0
    listing = capsys.readouterr().out
    assert ws in listing
    assert "acme" in listing
    assert api_key not in listing

    async def store() -> None:
        pool = await asyncpg.create_pool(pg_app_url, min_size=1, max_size=2)
        assert pool is not None
        try:
            await write_records(pool, DataKeys(Keyring.parse(master_keys)), ws,
                                [said("one"), said("two"), answered("q", "three")])
        finally:
            await pool.close()

    asyncio.run(store())

    second = MasterKey.generate("k2").encoded()
    monkeypatch.setenv("MUMU_MASTER_KEYS", f"{second},{master_keys}")
    assert main(["keys", "rotate", "--data-keys"]) == 0
    assert "rewrapped 1 data keys of 1 workspaces under master key k2" in capsys.readouterr().out
    assert main(["keys", "reencrypt"]) == 0
    assert "re-encrypted 3 rows" in capsys.readouterr().out
    assert main(["keys", "status"]) == 0
    status = capsys.readouterr().out
    assert "k1" not in status
    assert status.count("k2") == 2

    # promote an existing key of the ring; `--add` with an env keyring only prints the key
    assert main(["keys", "rotate", "--promote", "k1"]) == 0
    out = capsys.readouterr().out
    assert "rewrapped 2 data keys of 1 workspaces under master key k1" in out
    assert "now list k1 first in MUMU_MASTER_KEYS" in out
    assert main(["keys", "rotate", "--add", "k3"]) == 0
    assert "MUMU_MASTER_KEYS=<current keys>,k3:" in capsys.readouterr().out
    assert main(["keys", "status"]) == 0
    status = capsys.readouterr().out
    assert status.count("k1") == 2
    assert "k3" not in status

    # the development keyring file of `mumu up`: `--add` only adds (no process has the new
    # key yet, so nothing may be wrapped by it); `--promote` rewraps once they all have it
    monkeypatch.delenv("MUMU_MASTER_KEYS")
    data_dir = tmp_path / "mumu"
    data_dir.mkdir()
    monkeypatch.setenv("MUMU_DATA_DIR", str(data_dir))
    # the development keyring goes only with `mumu up`'s embedded database: its URLs are
    # in the data directory's state file, none in the environment
    monkeypatch.delenv("MUMU_DATABASE_ADMIN_URL")
    monkeypatch.delenv("MUMU_DATABASE_URL")
    (data_dir / STATE_FILE).write_text(json.dumps({"admin_url": pg_admin_url,
                                                   "app_url": pg_app_url}))
    running = f"{second},{master_keys}"  # the keyring the running processes have
    (data_dir / "master-keys").write_text(running + "\n")
    assert main(["keys", "rotate", "--add", "dev2"]) == 0
    out = capsys.readouterr().out
    assert "not primary; nothing rewrapped" in out
    assert "mumu keys rotate --promote dev2" in out
    ring = Keyring.parse((data_dir / "master-keys").read_text())
    assert ring.key_ids == ["k2", "k1", "dev2"]
    assert main(["keys", "status"]) == 0
    assert "dev2" not in capsys.readouterr().out
    # a process still running with the old keyring reads every row (no outage)
    assert len(asyncio.run(read_all(pg_app_url, Keyring.parse(running), ws))) == 3

    assert main(["keys", "rotate", "--promote", "dev2"]) == 0
    out = capsys.readouterr().out
    assert "rewrapped 2 data keys of 1 workspaces under master key dev2" in out
    assert (data_dir / "master-keys").read_text().startswith("dev2:")
    assert main(["keys", "reencrypt"]) == 0  # readable with the updated file
    capsys.readouterr()

    # the database half is done; without NATS the shred says it is not final (exit 1)
    assert main(["keys", "shred", ws, "--yes"]) == 1
    captured = capsys.readouterr()
    assert "NOT FINAL: NATS not purged (MUMU_NATS__URL is not set)" in captured.err
    assert f"run `mumu keys shred {ws} --yes` again" in captured.err
    out = captured.out
    assert "3 rows (2 transcripts, 1 answers) can no longer be decrypted" in out
    assert "vacuumed mumu.data_keys" in out
    assert "NOT FINAL YET" in out
    assert "wrapped by master key dev2" in out
    assert "backups" in out
    assert main(["keys", "shred", str(uuid.uuid4()), "--yes"]) == 1
    capsys.readouterr()
    assert main(["keys", "status"]) == 0
    assert f"shredded, storing nothing until `mumu keys reenable`: {ws} (since" in \
        capsys.readouterr().out
    assert main(["keys", "reenable", ws]) == 0
    assert f"workspace {ws} re-enabled: new data key v3" in capsys.readouterr().out
    assert main(["keys", "status"]) == 0
    assert "storing nothing" not in capsys.readouterr().out
    assert main(["keys", "reenable", ws]) == 1
    assert f"workspace {ws} is not shredded" in capsys.readouterr().err


async def read_all(app_url: str, keyring: Keyring, ws: str) -> list[str]:
    pool = await asyncpg.create_pool(app_url, min_size=1, max_size=1)
    assert pool is not None
    try:
        return await texts(pool, keyring, ws)
    finally:
        await pool.close()


@pytest.mark.parametrize(
    "argv",
    [["keys", "shred", "not-a-uuid", "--yes"], ["workspace", "key", "not-a-uuid"]],
)
def test_cli_refuses_a_workspace_id_that_is_not_a_uuid_in_one_line(
    argv: list[str], capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "invalid UUID value: 'not-a-uuid'" in err
    assert "Traceback" not in err


def test_cli_workspace_key_of_an_unknown_workspace(
    pg_admin_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MUMU_DATABASE_ADMIN_URL", pg_admin_url)
    missing = str(uuid.uuid4())
    assert main(["workspace", "key", missing]) == 1
    assert capsys.readouterr().err.strip() == f"mumu workspace: workspace {missing} does not exist"


async def test_ciphertext_moved_between_rows_or_workspaces_in_the_database_fails(
    app_pool: asyncpg.Pool, admin_conn: asyncpg.Connection, keys: DataKeys,
    workspace: WorkspaceFactory,
) -> None:
    a, _ = await workspace("A")
    b, _ = await workspace("B")
    first, second = said("first"), said("second")
    await write_records(app_pool, keys, a, [first, second])
    await write_records(app_pool, keys, b, [said("bravo")])
    # an attacker with write access to the table swaps ciphertexts between rows
    await admin_conn.execute(
        "UPDATE mumu.transcripts SET text = (SELECT text FROM mumu.transcripts "
        "WHERE event_id = $2) WHERE event_id = $1", first.event_id, second.event_id)
    with pytest.raises(DecryptionError, match="moved from another row"):
        await session_history(app_pool, keys, a, "s")
    # ... or copies another workspace's ciphertext into B's row
    await admin_conn.execute(
        "UPDATE mumu.transcripts SET text = (SELECT text FROM mumu.transcripts "
        "WHERE event_id = $1) WHERE workspace_id = $2", second.event_id, b)
    with pytest.raises(DecryptionError):
        await session_history(app_pool, keys, b, "s")

"""``mumu keys generate|status|rotate|reencrypt|shred|reenable``: the master keyring and
data keys.

``shred`` is final: the database destroys the workspace's data keys and refuses it new
ones, every persist replica drops its cached keys, and NATS loses every message, object,
KV entry and dead letter of the workspace (``mumu.ops.shred``). Its later messages are
dead-lettered without their bodies, never stored, until ``reenable``.

Zero-downtime master-key rotation, in two steps so no process ever meets a data key
wrapped by a master key it does not have:

1. ``mumu keys rotate --add k2`` makes the key (the development keyring file of ``mumu
   up`` gets it at the end, not primary; with ``MUMU_MASTER_KEYS`` it is printed): add it
   to the keyring of EVERY process and restart/roll them. Nothing is rewrapped yet.
2. ``mumu keys rotate --promote k2`` rewraps every data key under it; then list it first
   in ``MUMU_MASTER_KEYS`` everywhere (the development file is reordered for you), and
   drop the old key once ``mumu keys status`` shows no data key under it.
"""

from __future__ import annotations

import argparse
import sys
import uuid

import asyncpg
import nats.errors
from nats.aio.client import Client as NATS

from mumu.cli.common import table, with_admin, with_nats
from mumu.crypto import MasterKey
from mumu.db import keyadmin
from mumu.db.bootstrap import (
    KEYRING_FILE,
    add_dev_master_key,
    keyring_of,
    promote_dev_master_key,
    uses_dev_keyring,
)
from mumu.db.datakeys import DataKeys, shredded_at
from mumu.db.pool import workspace_tx
from mumu.db.workspaces import workspace_ids
from mumu.ops import shred as nats_shred
from mumu.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("keys", help="master keyring and workspace data keys")
    verbs = p.add_subparsers(dest="verb", required=True)
    gen = verbs.add_parser("generate", help="print a new master key as `id:base64key`")
    gen.add_argument("--id", default="k1", help="key id (letters, digits, - and _)")
    gen.set_defaults(func=run_generate)
    st = verbs.add_parser("status", help="data keys per workspace and master key")
    st.set_defaults(func=run_status)
    rot = verbs.add_parser(
        "rotate", help="rewrap every data key under the primary master key (online)"
    )
    rot.add_argument(
        "--data-keys", action="store_true",
        help="also start a new data-key version per workspace (old rows stay readable)",
    )
    which = rot.add_mutually_exclusive_group()
    which.add_argument(
        "--promote", metavar="ID",
        help="rewrap every data key under this key of the keyring (every process must "
        "have it already), then list it first everywhere",
    )
    which.add_argument(
        "--add", metavar="ID",
        help="generate a new master key, not primary, nothing rewrapped: added to the "
        "development keyring file of `mumu up`, or printed to append to MUMU_MASTER_KEYS; "
        "restart every process with it, then `--promote ID`",
    )
    rot.set_defaults(func=run_rotate)
    re = verbs.add_parser(
        "reencrypt", help="rewrite rows under each workspace's newest data key (resumable)"
    )
    re.add_argument("--batch", type=int, default=500, help="rows per transaction")
    re.set_defaults(func=run_reencrypt)
    sh = verbs.add_parser(
        "shred", help="destroy a workspace's data keys: its rows can never be decrypted"
    )
    sh.add_argument("workspace_id", type=uuid.UUID, help="the workspace id (a UUID)")
    sh.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    sh.set_defaults(func=run_shred)
    ren = verbs.add_parser(
        "reenable", help="let a shredded workspace store data again, under a new data key "
        "(what was shredded stays unreadable)",
    )
    ren.add_argument("workspace_id", type=uuid.UUID, help="the workspace id (a UUID)")
    ren.set_defaults(func=run_reenable)


def run_generate(args: argparse.Namespace, settings: Settings) -> int:
    print(MasterKey.generate(args.id).encoded())
    return 0


def run_status(args: argparse.Namespace, settings: Settings) -> int:
    async def work(conn: asyncpg.Connection) -> int:
        rows = []
        closed = []
        for ws in await workspace_ids(conn):
            async with workspace_tx(conn, ws) as tx:
                when = await shredded_at(tx, ws)
                if when is not None:
                    closed.append(f"{ws} (since {when:%Y-%m-%d %H:%M:%S %Z})")
                for r in await tx.fetch(
                    "SELECT version, coalesce(master_key_id, '-') AS kid, shredded_at "
                    "FROM mumu.data_keys WHERE workspace_id = $1 ORDER BY version", ws
                ):
                    state = "shredded" if r["shredded_at"] else "active"
                    rows.append([ws, r["version"], r["kid"], state])
        print(table(["workspace", "data key", "master key", "state"], rows))
        if closed:
            print("shredded, storing nothing until `mumu keys reenable`: " + ", ".join(closed))
        return 0

    return with_admin(settings, work)


def run_rotate(args: argparse.Namespace, settings: Settings) -> int:
    keyring = keyring_of(settings.master_keys, settings.data_dir, settings.database)
    configured_primary = keyring.primary_id
    if args.add:
        return _add(args.add, settings, keyring.key_ids)
    if args.promote:
        keyring = keyring.promoted(args.promote)
    keys = DataKeys(keyring)

    async def work(conn: asyncpg.Connection) -> int:
        report = await keyadmin.rotate(conn, keys, new_data_keys=args.data_keys)
        print(f"rewrapped {report.rewrapped} data keys of {report.workspaces} workspaces "
              f"under master key {report.primary}")
        moved = report.primary != configured_primary
        if moved and uses_dev_keyring(settings.master_keys, settings.data_dir, settings.database):
            promote_dev_master_key(settings.data_dir, report.primary)
            print(f"{report.primary} is now first in {settings.data_dir / KEYRING_FILE} "
                  "(restart `mumu up` to wrap new data keys with it)")
        elif moved:
            print(f"now list {report.primary} first in MUMU_MASTER_KEYS on every process")
        if args.data_keys:
            print(f"new data-key versions: {report.new_data_keys} (new rows use them; "
                  "`mumu keys reencrypt` moves old rows)")
        return 0

    return with_admin(settings, work)


def _add(key_id: str, settings: Settings, have: list[str]) -> int:
    """Step 1 of a rotation: a new master key every process must get before promotion."""
    if key_id in have:
        raise RuntimeError(f"master key {key_id!r} is already in the keyring")
    new = MasterKey.generate(key_id)
    if uses_dev_keyring(settings.master_keys, settings.data_dir, settings.database):
        add_dev_master_key(settings.data_dir, new)
        print(f"added master key {key_id} to {settings.data_dir / KEYRING_FILE} "
              "(not primary; nothing rewrapped)")
        print("  1. restart `mumu up` so every process has it")
        print(f"  2. then run `mumu keys rotate --promote {key_id}`")
        return 0
    print(f"new master key {key_id} (not used yet; nothing rewrapped). Deploy it first:")
    print(f"  1. append it on EVERY process: MUMU_MASTER_KEYS=<current keys>,{new.encoded()}")
    print("  2. restart/roll every process, so each one can unwrap with it")
    print(f"  3. then run `mumu keys rotate --promote {key_id}` and list it first everywhere")
    return 0


def run_reencrypt(args: argparse.Namespace, settings: Settings) -> int:
    keys = DataKeys(keyring_of(settings.master_keys, settings.data_dir, settings.database))

    def progress(ws: str, done: int) -> None:
        print(f"\r{ws}: {done} rows re-encrypted", end="", file=sys.stderr, flush=True)

    async def work(conn: asyncpg.Connection) -> int:
        total = await keyadmin.reencrypt(conn, keys, batch=args.batch, progress=progress)
        print(file=sys.stderr)
        print(f"re-encrypted {total} rows")
        return 0

    return with_admin(settings, work)


def run_shred(args: argparse.Namespace, settings: Settings) -> int:
    ws = str(args.workspace_id)
    if not args.yes:
        answer = input(f"Destroy every data key of workspace {ws} and purge its messages "
                       "from NATS? Its stored transcripts and answers can never be read "
                       "again, and nothing more of it is stored until `mumu keys reenable`. "
                       "Type 'shred': ")
        if answer.strip() != "shred":
            print("not shredded")
            return 1

    async def work(conn: asyncpg.Connection) -> int:
        try:
            report = await keyadmin.shred(conn, ws)
        except LookupError as exc:
            raise RuntimeError(str(exc)) from exc
        print(f"shredded {report.data_keys} data keys of workspace {report.workspace_id}: "
              f"{report.rows} rows ({report.transcripts} transcripts, {report.answers} "
              "answers) can no longer be decrypted from this database")
        print("vacuumed mumu.data_keys: the old versions of the key rows are gone from "
              "the live table")
        if report.master_keys:
            masters = ", ".join(report.master_keys)
            print(f"NOT FINAL YET: copies of the wrapped keys remain in WAL, replicas, "
                  f"backups (PITR) and dumps made before now, wrapped by master key "
                  f"{masters}, which is still in the keyring. To make the erasure final, "
                  f"rotate the master key (`mumu keys rotate --add NEW`, deploy, "
                  f"`--promote NEW`), then remove {masters} from every keyring and destroy "
                  "every copy of it.")
        print(f"workspace {ws} stores nothing more (its messages are dead-lettered "
              "without their bodies) until `mumu keys reenable` lets it")
        return 0

    code = with_admin(settings, work)
    return code or _purge_nats(settings, ws)


def _purge_nats(settings: Settings, ws: str) -> int:
    """The NATS half of a shred; 1 (and how to finish) when NATS cannot be reached."""
    again = f"run `mumu keys shred {ws} --yes` again with NATS reachable to finish"
    if not settings.nats.url:
        print(f"NOT FINAL: NATS not purged (MUMU_NATS__URL is not set): its streams, "
              f"buckets, KV and dead letters may still hold the workspace's plaintext; "
              f"{again}", file=sys.stderr)
        return 1

    async def work(nc: NATS) -> nats_shred.PurgeReport:
        await nats_shred.announce(nc, ws)
        return await nats_shred.purge_workspace(nc, ws)

    try:
        report = with_nats(settings, "keys", work)
    except (RuntimeError, nats.errors.Error, TimeoutError) as exc:
        print(f"NOT FINAL: NATS not purged ({exc}); {again}", file=sys.stderr)
        return 1
    print("told every persist replica to drop its cached data keys of the workspace")
    purged = ", ".join(f"{n} from {s}" for s, n in sorted(report.messages.items()))
    print(f"purged from NATS: {purged or 'no stream messages'}; "
          f"{report.audio_objects} audio objects; {report.dead_letters} dead letters")
    return 0


def run_reenable(args: argparse.Namespace, settings: Settings) -> int:
    ws = str(args.workspace_id)
    keys = DataKeys(keyring_of(settings.master_keys, settings.data_dir, settings.database))

    async def work(conn: asyncpg.Connection) -> int:
        try:
            report = await keyadmin.reenable(conn, keys, ws)
        except (LookupError, ValueError) as exc:
            raise RuntimeError(str(exc)) from exc
        print(f"workspace {ws} re-enabled: new data key v{report.data_key_version}; new "
              "messages are stored again (what was shredded stays unreadable)")
        return 0

    return with_admin(settings, work)

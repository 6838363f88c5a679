"""``mumu keys generate|status|rotate|reencrypt|shred``: the master keyring and data keys.

Zero-downtime master-key rotation: (1) ``mumu keys generate --id k2`` and append it to
``MUMU_MASTER_KEYS`` everywhere; (2) move it first (it becomes primary); (3) ``mumu keys
rotate`` rewraps every data key under it; (4) drop the old key once ``mumu keys status``
shows no data key under it.
"""

from __future__ import annotations

import argparse
import sys

import asyncpg

from mumu.cli.common import table
from mumu.cli.workspace import with_admin
from mumu.crypto import MasterKey
from mumu.db import keyadmin
from mumu.db.bootstrap import KEYRING_FILE, add_dev_master_key, keyring_of, uses_dev_keyring
from mumu.db.datakeys import DataKeys
from mumu.db.pool import workspace_tx
from mumu.db.workspaces import workspace_ids
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
        help="rewrap under this key of MUMU_MASTER_KEYS (then list it first everywhere)",
    )
    which.add_argument(
        "--add", metavar="ID",
        help="generate a new master key: with the development keyring file of `mumu up` "
        "it is added there as primary and used at once; with MUMU_MASTER_KEYS it is "
        "printed for you to deploy first (nothing is rewrapped)",
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
    sh.add_argument("workspace_id")
    sh.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    sh.set_defaults(func=run_shred)


def run_generate(args: argparse.Namespace, settings: Settings) -> int:
    print(MasterKey.generate(args.id).encoded())
    return 0


def run_status(args: argparse.Namespace, settings: Settings) -> int:
    async def work(conn: asyncpg.Connection) -> int:
        rows = []
        for ws in await workspace_ids(conn):
            async with workspace_tx(conn, ws) as tx:
                for r in await tx.fetch(
                    "SELECT version, coalesce(master_key_id, '-') AS kid, shredded_at "
                    "FROM mumu.data_keys WHERE workspace_id = $1 ORDER BY version", ws
                ):
                    state = "shredded" if r["shredded_at"] else "active"
                    rows.append([ws, r["version"], r["kid"], state])
        print(table(["workspace", "data key", "master key", "state"], rows))
        return 0

    return with_admin(settings, work)


def run_rotate(args: argparse.Namespace, settings: Settings) -> int:
    keyring = keyring_of(settings)
    if args.add:
        new = MasterKey.generate(args.add)
        if not uses_dev_keyring(settings):
            print(f"new master key {new.key_id} (not used yet). Deploy it on every process:")
            print(f"  1. append it:  MUMU_MASTER_KEYS=<current keys>,{new.encoded()}")
            print(f"  2. then move it first, and run `mumu keys rotate --promote {new.key_id}`")
            return 0
        keyring = keyring.with_primary(new)
        add_dev_master_key(settings, new)
        print(f"added master key {new.key_id} to {settings.data_dir / KEYRING_FILE} as primary "
              "(restart `mumu up` so every process has it)")
    elif args.promote:
        keyring = keyring.promoted(args.promote)
    keys = DataKeys(keyring)

    async def work(conn: asyncpg.Connection) -> int:
        report = await keyadmin.rotate(conn, keys, new_data_keys=args.data_keys)
        print(f"rewrapped {report.rewrapped} data keys of {report.workspaces} workspaces "
              f"under master key {report.primary}")
        if report.primary != keyring_of(settings).primary_id and not args.add:
            print(f"now list {report.primary} first in MUMU_MASTER_KEYS on every process")
        if args.data_keys:
            print(f"new data-key versions: {report.new_data_keys} (new rows use them; "
                  "`mumu keys reencrypt` moves old rows)")
        return 0

    return with_admin(settings, work)


def run_reencrypt(args: argparse.Namespace, settings: Settings) -> int:
    keys = DataKeys(keyring_of(settings))

    def progress(ws: str, done: int) -> None:
        print(f"\r{ws}: {done} rows re-encrypted", end="", file=sys.stderr, flush=True)

    async def work(conn: asyncpg.Connection) -> int:
        total = await keyadmin.reencrypt(conn, keys, batch=args.batch, progress=progress)
        print(file=sys.stderr)
        print(f"re-encrypted {total} rows")
        return 0

    return with_admin(settings, work)


def run_shred(args: argparse.Namespace, settings: Settings) -> int:
    if not args.yes:
        answer = input(f"Destroy every data key of workspace {args.workspace_id}? Its stored "
                       "transcripts and answers can never be read again. Type 'shred': ")
        if answer.strip() != "shred":
            print("not shredded")
            return 1

    async def work(conn: asyncpg.Connection) -> int:
        try:
            report = await keyadmin.shred(conn, args.workspace_id)
        except LookupError as exc:
            raise RuntimeError(str(exc)) from exc
        print(f"shredded {report.data_keys} data keys of workspace {report.workspace_id}: "
              f"{report.rows} rows ({report.transcripts} transcripts, {report.answers} "
              "answers) can never be decrypted")
        return 0

    return with_admin(settings, work)

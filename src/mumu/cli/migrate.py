"""``mumu migrate``: apply the SQL migrations and set up the application login role."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import asyncpg

from mumu.db.bootstrap import admin_url_of
from mumu.db.migrate import apply_migrations, ensure_app_login, migrations
from mumu.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "migrate",
        help="apply sql/ migrations (MUMU_DATABASE_ADMIN_URL) and grant the app role",
        description="Applies the ordered migrations not applied yet (idempotent), then makes "
        "the user of MUMU_DATABASE_URL a NOSUPERUSER NOBYPASSRLS member of mumu_app.",
    )
    p.add_argument("--dir", type=Path, default=None, help="folder of NNNN_*.sql migrations")
    p.add_argument("--list", action="store_true", help="only list the migrations and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.list:
        for m in migrations(args.dir):
            print(f"{m.name}  {m.checksum[:12]}")
        return 0

    async def main() -> int:
        conn = await asyncpg.connect(admin_url_of(settings.database, settings.data_dir))
        try:
            applied = await apply_migrations(conn, args.dir)
            for name in applied:
                print(f"applied {name}")
            if not applied:
                print("database is up to date")
            if settings.database_url is not None:
                user = await ensure_app_login(conn, settings.database_url.get_secret_value())
                print(f"application role {user}: LOGIN NOSUPERUSER NOBYPASSRLS, in mumu_app")
        finally:
            await conn.close()
        return 0

    return asyncio.run(main())

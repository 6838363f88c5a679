"""Helpers shared by command modules."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
from nats.aio.client import Client as NATS

from mumu.broker.connect import connect
from mumu.db.bootstrap import admin_url_of
from mumu.settings import Settings

T = TypeVar("T")


def with_nats(settings: Settings, name: str, work: Callable[[NATS], Awaitable[T]]) -> T:
    """Connect to the configured NATS server, run ``work``, drain."""

    async def main() -> T:
        nc = await connect(settings.nats, name=f"mumu-cli-{name}")
        try:
            return await work(nc)
        finally:
            await nc.drain()

    return asyncio.run(main())


def with_admin(settings: Settings, work: Callable[[asyncpg.Connection], Awaitable[int]]) -> int:
    """Connect to the database as its owner, run ``work``, close."""

    async def main() -> int:
        conn = await asyncpg.connect(admin_url_of(settings.database, settings.data_dir))
        try:
            return await work(conn)
        finally:
            await conn.close()

    return asyncio.run(main())


def table(headers: list[str], rows: list[list[object]]) -> str:
    cells = [headers, *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in cells)

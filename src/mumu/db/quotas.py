"""Per-workspace quota overrides (``mumu.workspace_limits``; the defaults are settings)."""

from __future__ import annotations

from collections.abc import Mapping

from mumu.db.pool import Db, workspace_tx


async def limit_overrides(db: Db, workspace_id: str) -> dict[str, float]:
    """The overridden limits of one workspace (name → value), read under its RLS scope."""
    async with workspace_tx(db, workspace_id) as conn:
        rows = await conn.fetch("SELECT name, value FROM mumu.workspace_limits")
    return {str(r["name"]): float(r["value"]) for r in rows}


async def set_limit_overrides(
    db: Db, workspace_id: str, values: Mapping[str, float | None]
) -> None:
    """Set (a value) or remove (``None``: back to the default) overrides, in one
    transaction (owner role: the application role may only read them)."""
    async with workspace_tx(db, workspace_id) as conn:
        for name, value in values.items():
            if value is None:
                await conn.execute(
                    "DELETE FROM mumu.workspace_limits WHERE workspace_id = $1 AND name = $2",
                    workspace_id, name)
            else:
                await conn.execute(
                    "INSERT INTO mumu.workspace_limits (workspace_id, name, value) "
                    "VALUES ($1, $2, $3) ON CONFLICT (workspace_id, name) "
                    "DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
                    workspace_id, name, value)

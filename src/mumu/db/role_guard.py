"""The check a process makes of its own database role before it serves anything: a role
that row-level security does not bind (a superuser, a BYPASSRLS role, a member of one,
or an owner of schema ``mumu`` or of anything in it) would let every query see every
workspace, so the process refuses it instead of running with RLS silently off.

``mumu migrate`` refuses such a role when it sets the application role up; this is the
same refusal at the start of each process that uses ``MUMU_DATABASE_URL`` (the URL can
be changed after the migrations ran, or point at a role made by hand).
"""

from __future__ import annotations

import asyncpg

_BYPASS = """
SELECT current_user AS me, r.rolname, r.rolsuper, r.rolbypassrls
  FROM pg_roles r
 WHERE (r.rolsuper OR r.rolbypassrls OR r.oid IN (
          SELECT nspowner FROM pg_namespace WHERE nspname = 'mumu'
          UNION SELECT c.relowner FROM pg_class c
                  JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'mumu'))
   AND pg_has_role(current_user, r.oid, 'MEMBER')
 ORDER BY r.rolname = current_user DESC, r.rolname
 LIMIT 1
"""
"""The first role the session's user is (or can ``SET ROLE`` to) that RLS does not bind;
the user itself first (a superuser is a member of every role)."""

FIX = (
    "Point MUMU_DATABASE_URL at a plain LOGIN NOSUPERUSER NOBYPASSRLS role that is a member "
    "of mumu_app and owns nothing in schema mumu (`mumu migrate` creates one from the URL's "
    "user name and password when it does not exist)"
)


class UnsafeRoleError(RuntimeError):
    """``MUMU_DATABASE_URL`` names a role that row-level security does not bind."""


async def refuse_rls_bypass(
    conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy, who: str
) -> None:
    """``UnsafeRoleError`` (naming the role, what it is and the fix) when RLS would not
    bind the session's user; ``who`` is the process that refuses (``the persist stage``)."""
    row = await conn.fetchrow(_BYPASS)
    if row is None:
        return
    what = ("a superuser" if row["rolsuper"] else "a BYPASSRLS role" if row["rolbypassrls"]
            else "an owner of schema mumu or of tables in it")
    me = row["me"]
    whose = "" if row["rolname"] == me else f"a member of {row['rolname']!r}, "
    raise UnsafeRoleError(
        f"MUMU_DATABASE_URL connects as role {me!r}, which is {whose}{what}: row-level "
        f"security would not keep workspaces apart, so {who} refuses to use it. {FIX}."
    )

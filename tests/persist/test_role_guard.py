"""A ``MUMU_DATABASE_URL`` role that row-level security does not bind (a superuser, a
BYPASSRLS role, a member of one): the persist stage and the gateway refuse to start and
say which role and why; the plain application role starts."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest
from nats.aio.client import Client as NATS
from pydantic import SecretStr

from mumu.db.role_guard import UnsafeRoleError
from mumu.db.urls import with_user
from mumu.settings import Settings
from mumu.stages.persist.stage import build_stage
from tests.gateway.conftest import gateway_settings, serving
from tests.harness import running
from tests.persist.events import merged

MakeRole = Callable[[str], Awaitable[str]]

KINDS = {
    "superuser": ("SUPERUSER", "is a superuser"),
    "bypassrls": ("NOSUPERUSER BYPASSRLS", "is a BYPASSRLS role"),
    "member": ("NOSUPERUSER NOBYPASSRLS", "is a member of '{role}_priv', a BYPASSRLS role"),
}


@pytest.fixture
async def unsafe_url(
    admin_conn: asyncpg.Connection, pg_admin_url: str,
) -> AsyncIterator[MakeRole]:
    """A login URL of a new role of the given kind, in mumu_app; dropped afterwards."""
    made: list[str] = []

    async def make(kind: str) -> str:
        role = f"mumu_test_{kind}_{secrets.token_hex(4)}"
        password = secrets.token_urlsafe(12)
        await admin_conn.execute(
            f"CREATE ROLE {role} LOGIN {KINDS[kind][0]} PASSWORD '{password}'")
        made.append(role)
        await admin_conn.execute(f"GRANT mumu_app TO {role}")
        if kind == "member":  # can SET ROLE to a role that bypasses RLS
            await admin_conn.execute(f"CREATE ROLE {role}_priv NOLOGIN BYPASSRLS")
            made.append(f"{role}_priv")
            await admin_conn.execute(f"GRANT {role}_priv TO {role}")
        return with_user(pg_admin_url, role, password)

    yield make
    for role in reversed(made):
        await admin_conn.execute(f"DROP OWNED BY {role}")
        await admin_conn.execute(f"DROP ROLE {role}")


def _expected(url: str, kind: str) -> str:
    role = url.split("//", 1)[1].split(":", 1)[0]
    return f"connects as role '{role}', which {KINDS[kind][1].format(role=role)}"


@pytest.mark.parametrize("kind", sorted(KINDS))
async def test_persist_refuses_to_start_as_a_role_that_bypasses_rls(
    kind: str, nc: NATS, streams: None, settings: Settings, pg_settings: Settings,
    unsafe_url: MakeRole,
) -> None:
    url = await unsafe_url(kind)
    cfg = merged(settings, pg_settings).model_copy(update={"database_url": SecretStr(url)})
    with pytest.raises(UnsafeRoleError) as refused:
        async with running(build_stage(cfg), cfg):
            pytest.fail("the persist stage started as a role that bypasses RLS")
    message = str(refused.value)
    assert _expected(url, kind) in message
    assert "the persist stage refuses" in message
    assert "NOSUPERUSER NOBYPASSRLS" in message  # the fix
    assert url.split(":")[2].split("@")[0] not in message  # never the password


async def test_persist_starts_as_the_application_role(
    nc: NATS, streams: None, settings: Settings, pg_settings: Settings,
) -> None:
    cfg = merged(settings, pg_settings)
    stage = build_stage(cfg)
    async with running(stage, cfg):
        assert stage.pool.pool is not None  # connected and checked at start


@pytest.mark.parametrize("kind", ["superuser", "bypassrls"])
async def test_gateway_refuses_to_start_as_a_role_that_bypasses_rls(
    kind: str, nc: NATS, streams: None, settings: Settings, pg_settings: Settings,
    unsafe_url: MakeRole,
) -> None:
    url = await unsafe_url(kind)
    cfg = gateway_settings(settings).model_copy(update={
        "database_url": SecretStr(url), "master_keys": pg_settings.master_keys})
    with pytest.raises(UnsafeRoleError) as refused:
        async with serving(cfg):
            pytest.fail("the gateway started as a role that bypasses RLS")
    assert _expected(url, kind) in str(refused.value)
    assert "the gateway refuses" in str(refused.value)

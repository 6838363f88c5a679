"""The persist tenant-attack suite (``tests/persist/test_tenancy.py``), run again as the
application role on rows the FULL pipeline wrote: workspaces PA and PB asked through the
gateway (uploaded speech: ingest → transcribe → reason → persist), PA once, PB twice,
exactly the shape the suite's own hand-written rows have. The suite's tests are imported
as they are; only their ``two_tenants`` (and the database) are this run's."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import aiohttp
import asyncpg
import pytest

from mumu.db.pool import workspace_tx
from tests.persist.test_tenancy import (  # noqa: F401 - collected here, against this run
    test_api_keys_resolve_to_their_workspace_only,
    test_the_app_role_cannot_read_another_workspaces_keys,
    test_the_app_role_cannot_switch_rls_off,
    test_the_app_role_is_not_superuser_and_cannot_bypass_rls,
    test_the_requests_view_cannot_be_written,
    test_with_a_set_b_rows_are_invisible,
    test_with_a_set_inserting_into_b_is_refused,
    test_with_a_set_updating_or_deleting_any_row_is_refused,
    test_with_no_workspace_set_nothing_is_visible_or_writable,
    test_workspace_must_be_a_uuid,
    test_workspace_setting_does_not_leak_out_of_the_transaction,
)
from tests.secrets_scan import words_of
from tests.security.counts import Tally
from tests.security.run import ROOT, SecurityRun

pytestmark = pytest.mark.security

SPEECH = ROOT / "tests" / "data" / "speech"
ASKS = {"PA": ["en01.wav"], "PB": ["en02.wav", "en03.wav"]}


async def _ask(http: aiohttp.ClientSession, run: SecurityRun, name: str, clip: str
               ) -> dict[str, Any]:
    async with http.post(f"{run.gateway}/api/session",
                         headers={"Authorization": f"Bearer {run.ws(name).api_key}"}) as resp:
        token = (await resp.json())["token"]
    run.secret(f"session token of {name}", token)
    form = aiohttp.FormData()
    form.add_field("audio", (SPEECH / clip).read_bytes(), filename=clip)
    form.add_field("language", "en")
    async with http.post(f"{run.gateway}/api/ask?wait=true", data=form,
                         headers={"Authorization": f"Bearer {token}"},
                         timeout=aiohttp.ClientTimeout(total=150)) as resp:
        body: dict[str, Any] = await resp.json()
        assert resp.status == 200, body
    run.words.update(words_of(body["transcript"] or "", body["answer"] or ""))
    return body


async def _persisted(run: SecurityRun, expected: dict[str, int]) -> None:
    """Until the persist stage stored a transcript and an answer of every ask."""
    conn = await asyncpg.connect(run.admin_url)
    try:
        async with asyncio.timeout(60):
            while True:
                rows = {name: await conn.fetchval(
                    "SELECT (SELECT count(*) FROM mumu.transcripts WHERE workspace_id = $1)"
                    " + (SELECT count(*) FROM mumu.answers WHERE workspace_id = $1)",
                    run.ws(name).id) for name in expected}
                if rows == {name: 2 * n for name, n in expected.items()}:
                    return
                await asyncio.sleep(0.2)
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def pipeline_rows(run: SecurityRun) -> dict[str, list[dict[str, Any]]]:
    """The asks' results, once the pipeline stored them."""
    async def ask_all() -> dict[str, list[dict[str, Any]]]:
        async with aiohttp.ClientSession() as http:
            done = await asyncio.gather(*(_ask(http, run, name, clip)
                                          for name, clips in ASKS.items() for clip in clips))
        await _persisted(run, {name: len(clips) for name, clips in ASKS.items()})
        answers = iter(done)
        return {name: [next(answers) for _ in clips] for name, clips in ASKS.items()}

    return asyncio.run(ask_all())


@pytest.fixture
def pg_admin_url(run: SecurityRun) -> str:
    """The run's database (the suite's fixtures build their pools on it)."""
    return run.admin_url


@pytest.fixture
def master_keys(run: SecurityRun) -> str:
    return run.master_keys


@pytest.fixture
def two_tenants(pipeline_rows: dict[str, list[dict[str, Any]]], run: SecurityRun
                ) -> tuple[str, str]:
    return run.ws("PA").id, run.ws("PB").id


@pytest.fixture(autouse=True)
def counted(request: pytest.FixtureRequest, tally: Tally) -> Iterator[None]:
    """Each test of the suite is one attack (a parametrized case is one): refused when it
    passed."""
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None:
        tally.record(request.node.name, refused=report.passed)


async def test_the_rows_are_the_pipeline_s_and_b_s_ids_find_nothing_from_a(
    app_pool: asyncpg.Pool, pipeline_rows: dict[str, list[dict[str, Any]]], run: SecurityRun,
) -> None:
    """The rows under attack came through the stages (their request ids are the gateway's)
    and B's request ids, asked for by id with A set, return nothing."""
    pa, pb = run.ws("PA").id, run.ws("PB").id
    b_ids = sorted(r["request_id"] for r in pipeline_rows["PB"])
    async with workspace_tx(app_pool, pb) as conn:
        stored = await conn.fetch("SELECT request_id, language FROM mumu.transcripts ORDER BY 1")
    assert [(r["request_id"], r["language"]) for r in stored] == [(i, "en") for i in b_ids]
    async with workspace_tx(app_pool, pa) as conn:
        for table in ("transcripts", "answers", "requests"):
            column = "id" if table == "requests" else "request_id"
            assert await conn.fetchval(
                f"SELECT count(*) FROM mumu.{table} WHERE {column} = ANY($1)", b_ids) == 0

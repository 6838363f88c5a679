"""schemathesis against the served OpenAPI document: no input makes the gateway answer 5xx."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from mumu.settings import Settings
from mumu.stages.ingest.stage import IngestStage
from mumu.stages.reason.stage import build_stage as build_reason
from tests.gateway.conftest import gateway_settings, serving
from tests.gateway.pipeline import pipeline_settings
from tests.harness import running
from tests.pg_fixtures import WorkspaceFactory

pytestmark = pytest.mark.timeout(300)


async def test_no_5xx_for_any_generated_request(
    nc: NATS, streams: None, settings: Settings, pg_settings: Settings,
    workspace: WorkspaceFactory, model_cache: Path, tmp_path: Path,
) -> None:
    cfg = gateway_settings(
        pipeline_settings(settings, model_cache), wait_timeout=60.0, rate_limit_burst=10_000,
        rate_limit_per_second=1_000.0,
    )
    cfg = cfg.model_copy(update={
        "database_url": pg_settings.database_url, "master_keys": pg_settings.master_keys,
        "reason": cfg.reason.model_copy(update={"max_tokens": 4}),
    })
    ws, api_key = await workspace("fuzz")
    async with running(IngestStage(cfg), cfg), running(build_reason(cfg), cfg), serving(
        cfg
    ) as gw:
        # session tokens for the client routes, the API key for the two routes that take one
        reports = [
            await schemathesis(gw.url, gw.token(ws, "fuzz"), tmp_path, "^/api/(ask|sessions)"),
            await schemathesis(gw.url, api_key, tmp_path, "^/(api/session$|v1/)"),
        ]
    for code, report in reports:
        assert code == 0, report[-6000:]
        counts = re.search(r"(\d+) generated, (\d+) passed", report)
        assert counts, report[-3000:]
        assert counts[1] == counts[2], report[-3000:]
        assert int(counts[1]) > 20


async def schemathesis(url: str, bearer: str, cwd: Path, paths: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "st"), "run", f"{url}/api/openapi.json",
        "--url", url, "--checks", "not_a_server_error", "--max-examples", "12",
        "--phases", "examples,coverage,fuzzing", "--seed", "7", "--request-timeout", "90",
        "--include-path-regex", paths, "-H", f"Authorization: Bearer {bearer}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=cwd,
    )
    out, _ = await proc.communicate()
    return int(proc.returncode or 0), out.decode(errors="replace")

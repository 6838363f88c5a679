"""schemathesis against the served OpenAPI document, every operation of it, with
authentication: no input makes the gateway answer 5xx (``/api/ready`` may say 503: it is
documented, and here not every consumer is idle), every answer's status, content type,
headers and body conform to the document, a request without (or with wrong)
credentials is refused, and a method a route does not take is a 405 with ``Allow``."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from nats.aio.client import Client as NATS

from mumu.gateway.openapi import EXAMPLE_SESSION, openapi_document
from mumu.settings import Settings
from mumu.stages.persist.stage import build_stage as build_persist
from tests.gateway.conftest import gateway_settings, serving
from tests.gateway.pipeline import pipeline_settings, stages
from tests.harness import running
from tests.pg_fixtures import WorkspaceFactory

pytestmark = pytest.mark.timeout(420)

CHECKS = ",".join((
    "not_a_server_error", "status_code_conformance", "content_type_conformance",
    "response_schema_conformance", "response_headers_conformance", "negative_data_rejection",
    "ignored_auth", "missing_required_header", "unsupported_method",
    "allow_header_conformance",
))
"""Besides no 5xx: every status, content type and body the gateway answers is the one its
OpenAPI document (generated from the handlers' models) promises."""
CONFIG = """
[[operations]]
include-path = "/api/ready"
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "503"]
"""


async def test_no_5xx_and_every_answer_conforms_to_the_document(
    nc: NATS, streams: None, settings: Settings, pg_settings: Settings,
    workspace: WorkspaceFactory, model_cache: Path, tmp_path: Path,
    admin_conn: asyncpg.Connection,
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
    (tmp_path / "schemathesis.toml").write_text(CONFIG)
    async with stages(cfg), running(build_persist(cfg), cfg), serving(cfg) as gw:
        key_id = str(await admin_conn.fetchval(
            "SELECT id FROM mumu.api_keys WHERE workspace_id = $1", ws))
        token = gw.token(ws, EXAMPLE_SESSION, key_id)
        await _a_real_history(gw.url, token)
        # session tokens for the client routes, the API key for the two routes that take one
        reports = [
            await schemathesis(gw.url, token, tmp_path, "client",
                               "^/(api/(ask|sessions/|health|ready|openapi)|metrics|$)"),
            await schemathesis(gw.url, api_key, tmp_path, "keys", "^/(api/session$|v1/)"),
        ]
        # the checks bite: a document promising another health body fails the run
        wrong = openapi_document()
        wrong["components"]["schemas"]["Health"]["properties"]["status"] = {"const": "fine"}
        (tmp_path / "wrong.json").write_text(json.dumps(wrong))
        code, report, _ = await schemathesis(
            gw.url, token, tmp_path, "wrong", "^/api/health$", spec=str(tmp_path / "wrong.json"))
        assert code != 0 and "Response violates schema" in report, report[-3000:]
    statuses: dict[str, set[int]] = defaultdict(set)
    assert [code for code, _, _ in reports] == [0, 0], "\n".join(r[-5000:] for _, r, _ in reports)
    for _, report, har in reports:
        counts = re.search(r"(\d+) generated", report)
        assert counts and int(counts[1]) > 20, report[-3000:]
        for entry in har:
            path = re.sub(r"^http://[^/]+", "", entry["request"]["url"]).split("?")[0]
            statuses[f"{entry['request']['method']} {path}"].add(entry["response"]["status"])
    # every operation of the whole document was exercised, and past its authentication
    document = openapi_document()
    for path, methods in document["paths"].items():
        template = re.compile("^" + re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(path)) + "$")
        for method in methods:
            seen = set().union(*(codes for op, codes in statuses.items()
                                 if op.startswith(method.upper() + " ")
                                 and template.match(op.split(" ", 1)[1])))
            assert seen - {401, 405}, (method, path, seen)
    # the generated requests reached the routes' real work, not only their 4xx
    assert 200 in statuses[f"GET /api/sessions/{EXAMPLE_SESSION}/history"], statuses
    assert {200, 202} <= statuses["POST /api/ask"], statuses
    assert 200 in statuses["POST /api/session"], statuses
    assert 200 in statuses["GET /api/health"] and 200 in statuses["GET /metrics"]
    assert statuses["GET /api/ready"] <= {200, 503}


def test_every_reference_of_the_document_resolves() -> None:
    """A ``$ref`` without its schema makes schemathesis skip that body or answer (it did for
    the translations form and the model list): every one names a schema of the document."""
    document = openapi_document()
    refs = set(re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(document)))
    assert {"TranslationForm", "ModelList", "ModelCard"} <= refs
    assert refs <= set(document["components"]["schemas"]), refs - set(
        document["components"]["schemas"])


async def _a_real_history(url: str, token: str) -> None:
    """One answered question in the example session, stored by the persist stage."""
    auth = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{url}/api/ask?wait=true", json={"text": "Say hi."},
                             headers=auth) as resp:
            assert resp.status == 200, await resp.text()
        for _ in range(100):
            async with http.get(f"{url}/api/sessions/{EXAMPLE_SESSION}/history",
                                headers=auth) as resp:
                if (await resp.json())["items"]:
                    return
            await asyncio.sleep(0.1)
    raise AssertionError("the persist stage did not store the answer")


async def schemathesis(url: str, bearer: str, cwd: Path, name: str, paths: str,
                       spec: str | None = None) -> tuple[int, str, list[dict[str, Any]]]:
    """(exit code, output, HAR entries) of one schemathesis run."""
    har = cwd / f"{name}.har"
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "st"), "run", spec or f"{url}/api/openapi.json",
        "--url", url, "--checks", CHECKS, "--max-examples", "12",
        "--phases", "examples,coverage,fuzzing", "--seed", "7", "--request-timeout", "90",
        "--include-path-regex", paths, "-H", f"Authorization: Bearer {bearer}",
        "--report", "har", "--report-har-path", str(har),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=cwd,
    )
    out, _ = await proc.communicate()
    entries = json.loads(har.read_text())["log"]["entries"] if har.exists() else []
    return int(proc.returncode or 0), out.decode(errors="replace"), entries

"""The nats-py producer example works against a running pipeline, both ways."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from mumu.broker.credentials import AuthDir, write_secret
from mumu.broker.embedded import EmbeddedNats
from mumu.broker.reload import publish_users
from mumu.broker.settings import NatsSettings
from mumu.stages.ingest.stage import IngestStage
from mumu.stages.registry import STAGES
from mumu.stages.transcribe.stage import TranscribeStage
from tests.audio.conftest import SPEECH

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "examples" / "producer_nats_py.py"
CLI_EXAMPLE = ROOT / "examples" / "producer_nats_cli.sh"


async def producer_credentials(server: EmbeddedNats, workspace: str = "acme") -> Path:
    """Issue the workspace's producer credentials as `mumu workspace credentials` does."""
    assert server.auth_file is not None
    users = AuthDir(server.auth_file.parent)
    seed_file = users.path / f"producer-{workspace}.nk"
    write_secret(seed_file, users.issue_producer(workspace))
    await publish_users(NatsSettings(), users, STAGES.consumers(), url=server.url)
    return seed_file


async def run_example(server: EmbeddedNats, *args: str) -> tuple[int, str, str]:
    creds = await producer_credentials(server)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLE), "--server", server.url, "--workspace", "acme",
        "--creds", str(creds), "--timeout", "90", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode(), err.decode()


@pytest.mark.parametrize("mode", ["body", "object"])
async def test_producer_example_prints_partials_and_the_transcript(
    nats_server: EmbeddedNats, nc: NATS, pipeline: tuple[IngestStage, TranscribeStage], mode: str,
    workspaces,
) -> None:
    await workspaces("acme")
    extra = ["--object"] if mode == "object" else []
    code, out, err = await run_example(nats_server, str(SPEECH / "en05.wav"), *extra)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("uploaded" if mode == "object" else "published")
    assert any("→" in line for line in lines)  # a partial segment was printed
    assert "language en" in out
    assert "capital city" in lines[-1].lower()


async def test_producer_example_reports_the_error_code(
    nats_server: EmbeddedNats, nc: NATS, pipeline: tuple[IngestStage, TranscribeStage],
    workspaces,
) -> None:
    await workspaces("acme")
    code, _, err = await run_example(nats_server, str(SPEECH.parent / "bad" / "random.wav"))
    assert code == 2
    assert "unsupported_audio" in err


async def test_producer_example_for_a_workspace_nobody_created_fails_at_once(
    nats_server: EmbeddedNats, nc: NATS, workspaces
) -> None:
    await workspaces("someone-else")
    for extra in ([], ["--object"]):
        code, _, err = await asyncio.wait_for(
            run_example(nats_server, str(SPEECH / "en05.wav"), *extra), 30)
        assert code == 4, err
        assert "workspace acme has no intake stream or upload bucket" in err
        assert "mumu workspace create" in err


def test_cli_example_is_valid_bash() -> None:
    result = subprocess.run(["bash", "-n", str(CLI_EXAMPLE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


async def run_cli_example(server: EmbeddedNats, audio: Path) -> tuple[int, str, str]:
    creds = await producer_credentials(server)
    proc = await asyncio.create_subprocess_exec(
        "bash", str(CLI_EXAMPLE), str(audio), "acme",
        env={**os.environ, "NATS_URL": server.url, "NATS_NKEY": str(creds),
             "MUMU_TIMEOUT": "90"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode(), err.decode()


@pytest.mark.skipif(
    shutil.which("nats") is None,
    reason="the nats CLI (natscli) is not installed: no PyPI, npm or Debian package ships it "
    "(it is built from source with a Go far newer than Debian 12's 1.19)",
)
async def test_cli_example_prints_this_requests_final_or_its_error(
    nats_server: EmbeddedNats, nc: NATS, pipeline: tuple[IngestStage, TranscribeStage],
    workspaces,
) -> None:
    await workspaces("acme")
    code, out, err = await run_cli_example(nats_server, SPEECH / "en05.wav")
    assert code == 0, err
    final = json.loads(out.strip().splitlines()[-1])
    assert "capital city" in final["text"].lower()
    code, _, err = await run_cli_example(nats_server, SPEECH.parent / "bad" / "random.wav")
    assert code == 2
    assert "unsupported_audio" in err

"""`mumu streams apply` is idempotent, applies changes and reports drift (real server)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path

import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy, ConsumerConfig

from mumu.broker.embedded import EmbeddedNats
from mumu.broker.streams import apply_all, status, stream_config
from mumu.broker.workspaces import ensure_workspace
from mumu.contracts import subjects
from tests.conftest import nats_env

ROOT = Path(__file__).parents[2]


async def test_apply_creates_then_is_a_noop(nc: NATS) -> None:
    first = await apply_all(nc)
    assert {c.action for c in first} == {"created"}
    assert {c.name for c in first} >= {"MUMU_INGEST", "MUMU_RESULTS", "OBJ_mumu-audio", "KV_mumu-sessions"}
    second = await apply_all(nc)
    assert {c.action for c in second} == {"unchanged"}


async def test_changed_config_is_applied_and_drift_reported(nc: NATS, tmp_path: Path) -> None:
    await apply_all(nc)
    changed = tmp_path / "streams"
    shutil.copytree(ROOT / "streams", changed)
    path = changed / "mumu_results.json"
    config = json.loads(path.read_text())
    config["max_age"] = 2 * 3600 * 1_000_000_000
    path.write_text(json.dumps(config))

    drift = [c for c in await apply_all(nc, changed, dry_run=True) if c.action != "unchanged"]
    assert [(c.name, c.action) for c in drift] == [("MUMU_RESULTS", "drift")]
    assert drift[0].diff["max_age"] == (24 * 3600 * 1_000_000_000, 2 * 3600 * 1_000_000_000)
    live = await stream_config(nc, "MUMU_RESULTS")
    assert live is not None and live["max_age"] == 24 * 3600 * 1_000_000_000  # dry run changed nothing

    applied = [c for c in await apply_all(nc, changed) if c.action != "unchanged"]
    assert [(c.name, c.action) for c in applied] == [("MUMU_RESULTS", "updated")]
    live = await stream_config(nc, "MUMU_RESULTS")
    assert live is not None and live["max_age"] == 2 * 3600 * 1_000_000_000
    assert {c.action for c in await apply_all(nc, changed)} == {"unchanged"}


async def test_every_stream_survives_a_server_restart_and_an_old_memory_stream_moves_to_file(
    nc: NATS, tmp_path: Path,
) -> None:
    """MUMU_CONTROL was a memory stream, gone after every restart of a single server:
    every shipped stream is on file storage, and apply moves an old memory one over."""
    old = tmp_path / "streams"
    shutil.copytree(ROOT / "streams", old)
    path = old / "mumu_control.json"
    config = json.loads(path.read_text())
    assert config["storage"] == "file"
    config["storage"] = "memory"
    path.write_text(json.dumps(config))
    await apply_all(nc, old)
    live = await stream_config(nc, subjects.STREAM_CONTROL)
    assert live is not None and live["storage"] == "memory"

    applied = [c for c in await apply_all(nc) if c.action != "unchanged"]
    assert [(c.name, c.action) for c in applied] == [(subjects.STREAM_CONTROL, "recreated")]
    live = await stream_config(nc, subjects.STREAM_CONTROL)
    assert live is not None and live["storage"] == "file"
    shipped = [json.loads(p.read_text()) for p in (ROOT / "streams").glob("*.json")
               if p.name != "buckets.json"]
    assert [c["name"] for c in shipped if c.get("storage", "file") != "file"] == []


async def test_status_counts_messages_pending_and_redelivered(nc: NATS) -> None:
    await apply_all(nc)
    js = nc.jetstream()
    for i in range(3):
        await js.publish(f"mumu.error.ws{i}", b"{}")
    await js.add_consumer("MUMU_RESULTS", ConsumerConfig(
        durable_name="status-probe", ack_policy=AckPolicy.EXPLICIT, ack_wait=0.5,
        filter_subject="mumu.error.*"))
    psub = await js.pull_subscribe_bind(durable="status-probe", stream="MUMU_RESULTS")
    (first,) = await psub.fetch(1, timeout=5)  # never acked
    await asyncio.sleep(0.8)  # past ack_wait: it comes back
    (again,) = await psub.fetch(1, timeout=5)
    assert again.metadata.sequence.stream == first.metadata.sequence.stream
    rows = {r.name: r for r in await status(nc)}
    results = rows["MUMU_RESULTS"]
    assert (results.messages, results.consumers) == (3, 1)
    assert results.bytes > 0
    assert results.pending == 2  # not delivered yet
    assert results.ack_pending == 1  # delivered, not acked
    assert results.redelivered == 1
    assert rows["MUMU_INGEST"].pending == rows["MUMU_INGEST"].redelivered == 0


async def test_cli_apply_check_exit_codes(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    env = {**os.environ, **nats_env(nats_server)}

    async def mumu(*args: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mumu", *args, env=env, cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        return proc.returncode or 0, out.decode()

    code, out = await mumu("streams", "apply", "--check")
    assert code == 3 and "MUMU_INGEST: missing" in out
    code, out = await mumu("streams", "apply")
    assert code == 0 and "MUMU_INGEST: created" in out
    code, out = await mumu("streams", "apply")
    assert code == 0 and "created" not in out and "updated" not in out
    code, out = await mumu("streams", "status")
    assert code == 0 and "MUMU_RESULTS" in out and "redelivered" in out


async def test_cli_on_a_closed_port_fails_fast_naming_the_url(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        url = f"nats://app:s3cret-pw@127.0.0.1:{sock.getsockname()[1]}"
    env = {**os.environ, "MUMU_NATS__URL": url}
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mumu", "streams", "status", env=env, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1
    assert time.monotonic() - started < 15
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1, lines  # one line, no traceback
    shown = url.replace("s3cret-pw", "***")  # the URL, its password never
    assert lines[0].startswith("mumu streams: cannot connect to NATS at " + shown), lines
    assert "s3cret-pw" not in err.decode()


async def test_a_full_work_stream_refuses_new_requests_instead_of_evicting_old_ones(
    nc: NATS, streams: None
) -> None:
    # a producer's requests land in its workspace's intake stream (its own limit)
    await ensure_workspace(nc, "ws1", intake_max_bytes=4096)
    js = nc.jetstream()
    refused = None
    for i in range(20):
        try:
            await js.publish("mumu.ingest.text.ws1", b"x" * 500, headers={"Nats-Msg-Id": f"m{i}"})
        except nats.js.errors.APIError as exc:
            refused = exc
            break
    assert refused is not None, "the producer hears that the stream is full"
    info = await js.stream_info(subjects.intake_stream("ws1"))
    assert info.state.first_seq == 1, "no unprocessed request was evicted"
    assert str(getattr(info.config.discard, "value", info.config.discard)) == "new"
    for name in ("MUMU_INGEST", "MUMU_AUDIO", "MUMU_RESULTS"):  # every stage work stream
        live = await js.stream_info(name)
        assert str(getattr(live.config.discard, "value", live.config.discard)) == "new", name

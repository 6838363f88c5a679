"""`mumu up` on a fresh data directory: healthy fast, answers, stops cleanly, reuses its data;
and against an external, authenticated NATS server and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import time
from pathlib import Path

import aiohttp
import nats
import nats.errors
import pytest

from mumu.broker.embedded import EmbeddedNats
from mumu.contracts import subjects

STARTED = re.compile(r"started (\S+) \(pid (\d+)\)")


async def start_up(
    data_dir: Path, extra: dict[str, str] | None = None
) -> tuple[asyncio.subprocess.Process, dict[str, str], float]:
    # as a service or container runs it: no XDG_RUNTIME_DIR (libraries warn about that)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MUMU_") and k != "XDG_RUNTIME_DIR"}
    env.update({"MUMU_DATA_DIR": str(data_dir), "MUMU_GATEWAY__PORT": "0",
                "MUMU_NATS__EMBEDDED_PORT": "0", **(extra or {})})
    started = time.monotonic()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    with (data_dir.parent / "up.log").open("ab") as log:  # its own log: the children's pids
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mumu", "up", env=env, cwd=data_dir.parent,
            stdout=asyncio.subprocess.PIPE, stderr=log,
        )
    assert proc.stdout is not None
    lines: dict[str, str] = {}
    try:
        async with asyncio.timeout(90):
            while "logs" not in lines:
                line = (await proc.stdout.readline()).decode()
                assert line, f"mumu up exited before announcing itself: {log_tail(data_dir)}"
                key, _, value = line.strip().partition(": ")
                lines[key] = value
    except TimeoutError:
        proc.kill()
        pytest.fail(f"mumu up did not announce itself in 90 s: {log_tail(data_dir)}")
    return proc, lines, started


def log_tail(data_dir: Path) -> str:
    return (data_dir.parent / "up.log").read_text()[-3000:]


def children(data_dir: Path) -> dict[str, int]:
    """Name → pid of every child `mumu up` logged starting."""
    text = (data_dir.parent / "up.log").read_text()
    return {name: int(pid) for name, pid in STARTED.findall(text)}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").exists() and ") Z " not in Path(
        f"/proc/{pid}/stat").read_text()


async def stop_up(proc: asyncio.subprocess.Process) -> int:
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
    return await asyncio.wait_for(proc.wait(), 60)


async def ask(gateway: str, api_key: str, question: str) -> dict[str, object]:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{gateway}/api/session",
                             headers={"Authorization": f"Bearer {api_key}"}) as resp:
            assert resp.status == 200, await resp.text()
            token = (await resp.json())["token"]
        async with http.post(f"{gateway}/api/ask?wait=true", json={"text": question},
                             headers={"Authorization": f"Bearer {token}"},
                             timeout=aiohttp.ClientTimeout(total=180)) as resp:
            assert resp.status == 200, await resp.text()
            result: dict[str, object] = await resp.json()
            return result


async def health_and_readiness(gateway: str) -> dict[str, object]:
    """``/api/health``'s body, once it and ``/api/ready`` answer 200."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{gateway}/api/health") as resp:
            assert resp.status == 200, await resp.text()
            health: dict[str, object] = await resp.json()
        async with http.get(f"{gateway}/api/ready") as resp:
            assert resp.status == 200, await resp.text()
    assert set(health) == {"status", "version", "uptime", "hostname"}
    assert health["status"] == "ok"
    assert isinstance(health["uptime"], float)
    return health


@pytest.mark.slow
@pytest.mark.alone  # a start-up time: measured with nothing beside it (.ci/run's quiet step)
async def test_up_on_a_fresh_directory_is_healthy_and_ready_within_15_s(tmp_path: Path) -> None:
    """A first start (a new store key, ``initdb``, the migrations, the bundled model
    reassembled, six processes) is healthy in under 15 s, the README's promise. Timed
    alone: under the parallel run's model tests on two cores it took 15.6 s once."""
    data_dir = tmp_path / ".mumu"
    proc, lines, started = await start_up(data_dir)
    try:
        await health_and_readiness(lines["gateway"])
        elapsed = time.monotonic() - started
        assert elapsed < 15, f"healthy and ready in {elapsed:.1f} s, not within 15 s"
    finally:
        assert await stop_up(proc) == 0


@pytest.mark.slow
async def test_up_answers_stops_cleanly_and_reuses_its_data(tmp_path: Path) -> None:
    data_dir = tmp_path / ".mumu"
    proc, lines, _ = await start_up(data_dir)
    try:
        gateway = lines["gateway"]
        assert gateway.startswith("http://127.0.0.1:")
        assert lines["nats"].startswith("nats://127.0.0.1:")
        assert lines["workspace"] and lines["api key"]  # the first start makes a workspace
        await health_and_readiness(gateway)
        # the default workspace's intake exists before any ask: a raw producer can publish
        nc = await nats.connect(lines["nats"],
                                nkeys_seed=lines["operator credentials"].split()[0],
                                inbox_prefix="_MUMU_INBOX.operator")
        intake = subjects.intake_stream(lines["workspace"])
        assert (await nc.jetstream().stream_info(intake)).config.subjects == [
            subjects.INGEST_AUDIO.for_workspace(lines["workspace"]),
            subjects.INGEST_TEXT.for_workspace(lines["workspace"]),
            subjects.INGEST_LIVE.for_workspace(lines["workspace"]),
            f"{subjects.LIVE_CHUNK_PREFIX}.*.{lines['workspace']}"]
        ingest = await nc.jetstream().stream_info(subjects.STREAM_INGEST)
        assert [s.name for s in ingest.config.sources or []] == [intake]
        await nc.drain()
        result = await ask(gateway, lines["api key"], "What is the capital of France?")
        assert "paris" in str(result["answer"]).lower(), result
        # secure by default: no anonymous client; the printed credentials work
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await nats.connect(lines["nats"], allow_reconnect=False, connect_timeout=2)
        operator = Path(lines["operator credentials"].split()[0])
        producer = Path(lines["producer credentials"].split()[0])
        assert producer.stem == lines["workspace"]
        assert operator.stat().st_mode & 0o777 == producer.stat().st_mode & 0o777 == 0o600
        ws = lines["workspace"]
        pnc = await nats.connect(lines["nats"], nkeys_seed=str(producer),
                                 inbox_prefix=f"_INBOX.{ws}")
        assert (await pnc.jetstream().publish(f"mumu.ingest.text.{ws}", b"{}")).seq
        await pnc.drain()
        nc = await nats.connect(lines["nats"], nkeys_seed=str(operator),
                                inbox_prefix="_MUMU_INBOX.operator")
        js = nc.jetstream()
        await js.publish("mumu.error.marker", b"{}")  # survives the restart below
        await nc.drain()
        # a CLI command run in the `mumu up` directory finds the operator's credentials
        env = {k: v for k, v in os.environ.items() if not k.startswith("MUMU_")}
        cli = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mumu", "streams", "status", cwd=data_dir.parent,
            env={**env, "MUMU_NATS__URL": lines["nats"]}, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(cli.communicate(), 60)
        assert cli.returncode == 0 and b"MUMU_RESULTS" in out, out
        # the one exporter of stream fullness and consumer backlogs runs as its own role
        metrics_url = lines["metrics"].split()[0]
        async with aiohttp.ClientSession() as http, asyncio.timeout(30):
            while True:  # ready once it has read the JetStream API
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(metrics_url.replace("/metrics", "/ready")) as resp:
                        if resp.status == 200:
                            break
                await asyncio.sleep(0.2)
            async with http.get(metrics_url) as resp:
                exported = await resp.text()
        assert 'mumu_jetstream_stream_fullness_ratio{kind="stream",stream="MUMU_RESULTS"}' in (
            exported), exported
        assert 'mumu_build_info{component="exporter"' in exported
    finally:
        assert await stop_up(proc) == 0
    pids = children(data_dir)
    assert "gateway" in pids and len(pids) >= 5, pids  # four stages and the gateway
    # everything it started is gone: its children by pid, nats-server and postgres by path
    await asyncio.sleep(0.5)
    assert [name for name, pid in pids.items() if alive(pid)] == []
    ps = await asyncio.create_subprocess_exec("ps", "-eo", "args", stdout=asyncio.subprocess.PIPE)
    out, _ = await ps.communicate()
    assert str(data_dir) not in out.decode()

    proc, lines, _ = await start_up(data_dir)
    try:
        assert "workspace" not in lines, "a second start reuses the first workspace"
        assert Path(lines["producer credentials"].split()[0]) == producer  # kept, reprinted
        nc = await nats.connect(lines["nats"], nkeys_seed=str(operator),
                                inbox_prefix="_MUMU_INBOX.operator")
        info = await nc.jetstream().stream_info("MUMU_RESULTS", subjects_filter="mumu.error.marker")
        assert (info.state.subjects or {}).get("mumu.error.marker") == 1
        await nc.drain()
    finally:
        assert await stop_up(proc) == 0


@pytest.mark.slow
async def test_up_uses_an_external_nats_with_a_password_and_an_external_database(
    tmp_path: Path, pg_admin_url: str, pg_app_url: str, master_keys: str
) -> None:
    server = EmbeddedNats(tmp_path / "external-nats", user="mumu", password="s3cret-pw")
    async with server:
        data_dir = tmp_path / ".mumu"
        proc, lines, started = await start_up(data_dir, {
            "MUMU_NATS__URL": server.url, "MUMU_NATS__USER": "mumu",
            "MUMU_NATS__PASSWORD": "s3cret-pw", "MUMU_DATABASE_URL": pg_app_url,
            "MUMU_DATABASE_ADMIN_URL": pg_admin_url,
            "MUMU_MASTER_KEYS": master_keys,  # an external database needs it
        })
        try:
            assert lines["nats"] == server.url
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{lines['gateway']}/api/ready") as resp:
                    assert resp.status == 200, await resp.text()
            assert not (data_dir / "nats").exists(), "it started no nats-server of its own"
            assert not (data_dir / "master-keys").exists(), "no development keyring"
            assert "cli" not in lines  # nothing embedded to point the CLI at
            assert set(children(data_dir)) >= {"gateway", "ingest", "transcribe"}
        finally:
            assert await stop_up(proc) == 0
        assert "s3cret-pw" not in (tmp_path / "up.log").read_text()


@pytest.mark.slow
async def test_ctrl_c_while_starting_stops_everything_promptly(tmp_path: Path) -> None:
    data_dir = tmp_path / ".mumu"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUMU_")}
    env.update({"MUMU_DATA_DIR": str(data_dir), "MUMU_GATEWAY__PORT": "0",
                "MUMU_NATS__EMBEDDED_PORT": "0"})
    with (tmp_path / "up.log").open("ab") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mumu", "up", env=env, cwd=tmp_path,
            stdout=asyncio.subprocess.DEVNULL, stderr=log,
        )
    async with asyncio.timeout(90):  # until the gateway child was started, before it is ready
        while "gateway" not in children(data_dir):
            await asyncio.sleep(0.05)
    stopping = time.monotonic()
    proc.send_signal(signal.SIGINT)
    assert await asyncio.wait_for(proc.wait(), 45) == 0
    assert time.monotonic() - stopping < 30, "it waited for a gateway it had stopped itself"
    await asyncio.sleep(0.5)
    assert [name for name, pid in children(data_dir).items() if alive(pid)] == []


def assert_the_first_screen_shows_only_mumus_lines(tmp_path: Path, data_dir: Path,
                                                   lines: dict[str, str]) -> None:
    # stdout: exactly what a user needs to start, nothing else before it
    assert list(lines) == ["gateway", "nats", "metrics", "workspace", "api key",
                           "operator credentials", "producer credentials", "cli", "logs"]
    assert lines["cli"].startswith(f"export MUMU_DATA_DIR={data_dir.resolve()}  ")
    # stderr up to then: mumu's own JSON log lines (no library warning or command dump)
    screen = (tmp_path / "up.log").read_text().splitlines()
    assert screen, "mumu up logged nothing while starting"
    foreign = [line for line in screen if not _mumu_log_line(line)]
    assert foreign == []


def _mumu_log_line(line: str) -> bool:
    try:
        entry = json.loads(line)
    except ValueError:
        return False
    return isinstance(entry, dict) and str(entry.get("logger", "")).startswith("mumu.")


@pytest.mark.slow
async def test_up_shows_only_its_own_lines_first_and_restarts_a_stage_that_was_killed(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / ".mumu"
    proc, lines, _ = await start_up(data_dir)
    try:
        assert_the_first_screen_shows_only_mumus_lines(tmp_path, data_dir, lines)
        killed = children(data_dir)["reason"]
        os.kill(killed, signal.SIGKILL)
        async with asyncio.timeout(30):  # restart delay 1 s, then a new process
            while children(data_dir)["reason"] == killed:
                await asyncio.sleep(0.1)
        restarted = children(data_dir)["reason"]
        assert not alive(killed) and alive(restarted)
        assert f"reason exited with -{int(signal.SIGKILL)}; restarting" in log_tail(data_dir)
        # the new process serves: the question is answered (reason is the only answerer)
        result = await ask(lines["gateway"], lines["api key"], "What is the capital of France?")
        assert "paris" in str(result["answer"]).lower(), result
        assert children(data_dir)["reason"] == restarted, "it kept running"
    finally:
        assert await stop_up(proc) == 0
    await asyncio.sleep(0.5)
    assert [name for name, pid in children(data_dir).items() if alive(pid)] == []

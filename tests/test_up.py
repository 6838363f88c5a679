"""`mumu up` on a fresh data directory: healthy fast, stops cleanly, reuses its data."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import aiohttp
import nats
import pytest


async def start_up(data_dir: Path) -> tuple[asyncio.subprocess.Process, dict[str, str], float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUMU_")}
    env.update({"MUMU_DATA_DIR": str(data_dir), "MUMU_GATEWAY__PORT": "0",
                "MUMU_NATS__EMBEDDED_PORT": "0"})
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mumu", "up", env=env, cwd=data_dir.parent,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    lines: dict[str, str] = {}
    async with asyncio.timeout(60):
        while "logs" not in lines:
            line = (await proc.stdout.readline()).decode()
            assert line, "mumu up exited before announcing itself"
            key, _, value = line.strip().partition(": ")
            lines[key] = value
    return proc, lines, started


async def stop_up(proc: asyncio.subprocess.Process) -> int:
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
    return await asyncio.wait_for(proc.wait(), 60)


@pytest.mark.slow
async def test_up_is_healthy_fast_stops_cleanly_and_reuses_its_data(tmp_path: Path) -> None:
    data_dir = tmp_path / ".mumu"
    proc, lines, started = await start_up(data_dir)
    try:
        gateway = lines["gateway"]
        assert gateway.startswith("http://127.0.0.1:")
        assert lines["nats"].startswith("nats://127.0.0.1:")
        assert lines["workspace"] and lines["api key"]  # the first start makes a workspace
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{gateway}/api/health") as resp:
                health = await resp.json()
                assert resp.status == 200
            async with http.get(f"{gateway}/api/ready") as resp:
                assert resp.status == 200, await resp.text()
        assert time.monotonic() - started < 15, "healthy and ready within 15 s"
        assert set(health) == {"status", "version", "uptime", "hostname"}
        assert health["status"] == "ok"
        assert isinstance(health["uptime"], float)
        nc = await nats.connect(lines["nats"])
        js = nc.jetstream()
        await js.publish("mumu.error.marker", b"{}")  # survives the restart below
        await nc.drain()
    finally:
        assert await stop_up(proc) == 0
    # everything it started is gone
    await asyncio.sleep(0.5)
    ps = await asyncio.create_subprocess_exec("ps", "-eo", "args", stdout=asyncio.subprocess.PIPE)
    out, _ = await ps.communicate()
    assert str(data_dir) not in out.decode()

    proc, lines, _ = await start_up(data_dir)
    try:
        assert "workspace" not in lines, "a second start reuses the first workspace"
        nc = await nats.connect(lines["nats"])
        info = await nc.jetstream().stream_info("MUMU_RESULTS", subjects_filter="mumu.error.marker")
        assert (info.state.subjects or {}).get("mumu.error.marker") == 1
        await nc.drain()
    finally:
        assert await stop_up(proc) == 0

"""The whole pipeline as separate OS processes the chaos test can kill one by one: a
nats-server with file storage and a PostgreSQL cluster of this test's own (both stopped and
started again in place), each stage and the gateway as its own ``python -m mumu`` child
with only its own role's credentials, as `mumu up` runs them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from mumu.broker.credentials import AuthDir
from mumu.broker.embedded import EmbeddedNats
from mumu.broker.roles import Role
from mumu.db.embedded import EmbeddedPostgres
from mumu.up.supervisor import Child

STAGE_NAMES = ("ingest", "transcribe", "reason", "persist")
BACKLOG = "messages behind"
"""What /api/ready says of a consumer past ``MUMU_GATEWAY__LAG_THRESHOLD``."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Pipeline:
    """Four stage processes and the gateway on ``nats`` and ``postgres``; ``env``: what
    every child gets (settings), ``logs``: one file per child."""

    nats: EmbeddedNats
    postgres: EmbeddedPostgres
    users: AuthDir
    env: dict[str, str]
    logs: Path
    gateway_port: int = field(default_factory=free_port)
    children: dict[str, Child] = field(default_factory=dict)

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    def _child(self, name: str, extra: dict[str, str]) -> Child:
        role = Role(name)
        env = {
            **self.env, **extra,
            "MUMU_NATS__URL": self.nats.url,
            "MUMU_NATS__CREDENTIALS": str(self.users.seed_file(role)),
            "MUMU_GATEWAY__PORT": str(self.gateway_port),
        }
        args = ["gateway"] if name == "gateway" else ["stage", name]
        return Child(name, args, env, self.logs / f"{name}.log")

    async def start(self, name: str, extra: dict[str, str] | None = None) -> None:
        """Start ``name`` (again), with ``extra`` settings on top of the common ones."""
        child = self._child(name, extra or {})
        self.children[name] = child
        await child.start()

    async def start_all(self, timeout: float = 120.0) -> None:
        for name in (*STAGE_NAMES, "gateway"):
            await self.start(name)
        await self.wait_ready(timeout)

    async def kill(self, name: str) -> None:
        """SIGKILL: no drain, no goodbye, in-flight messages unacknowledged."""
        proc = self.children[name].proc
        assert proc is not None and proc.returncode is None, f"{name} is not running"
        proc.send_signal(signal.SIGKILL)
        await proc.wait()

    async def wait_ready(self, timeout: float = 90.0) -> float:
        """Until the gateway says ready (every stage consumer present, NATS and the
        database reachable) but for a backlog (a consumer past the lag threshold, which
        the faults cause and which drains on its own); returns when, ``time.monotonic()``."""
        deadline = time.monotonic() + timeout
        last = ""
        async with aiohttp.ClientSession() as http:
            while True:
                for name, child in self.children.items():
                    assert child.proc is not None and child.proc.returncode is None, (
                        f"{name} exited: {self.tail(name)}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                    async with http.get(f"{self.gateway}/api/ready",
                                        timeout=aiohttp.ClientTimeout(total=3)) as resp:
                        last = await resp.text()
                        reasons = json.loads(last).get("reasons") or []
                        if resp.status == 200 or all(BACKLOG in r for r in reasons):
                            return time.monotonic()
                assert time.monotonic() < deadline, f"not ready in {timeout} s: {last}"
                await asyncio.sleep(0.2)

    def tail(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    async def stop_all(self) -> None:
        await asyncio.gather(*(c.stop(15) for n, c in self.children.items() if n != "gateway"))
        if "gateway" in self.children:
            await self.children["gateway"].stop(10)


def child_env(base: dict[str, str]) -> dict[str, str]:
    """The test process's environment without its own mumu settings, plus ``base``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MUMU_") and k != "XDG_RUNTIME_DIR"}
    return env | base

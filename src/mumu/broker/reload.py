"""Make every nats-server of a deployment re-read its configuration (and so its users).

Uses the system account's requests, so it works the same for ``mumu up``'s embedded
server and for each node of a cluster, without signals or shell access: ask every server
for its id (``$SYS.REQ.SERVER.PING.IDZ``), then ask each one to reload
(``$SYS.REQ.SERVER.<id>.RELOAD``). On reload a server closes the connections of users
that are no longer in its configuration.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from mumu.broker.connect import connect
from mumu.broker.credentials import AuthDir
from mumu.broker.roles import Role
from mumu.broker.settings import NatsSettings
from mumu.contracts.consumers import StageConsumer

log = logging.getLogger(__name__)

PING_IDS = "$SYS.REQ.SERVER.PING.IDZ"


class ReloadError(RuntimeError):
    """A server did not reload (its answer or the missing answer says why)."""


async def server_ids(system: NATS, gather: float = 0.5) -> list[str]:
    """The id of every server that answers within ``gather`` seconds."""
    inbox = system.new_inbox()
    found: list[str] = []

    async def answer(msg: Msg) -> None:
        body = json.loads(msg.data)
        server = body.get("data", body)
        if "id" in server:
            found.append(server["id"])

    sub = await system.subscribe(inbox, cb=answer)
    try:
        await system.publish(PING_IDS, b"", reply=inbox)
        await system.flush()
        await asyncio.sleep(gather)
    finally:
        await sub.unsubscribe()
    return sorted(set(found))


async def reload_servers(system: NATS, timeout: float = 5.0) -> list[str]:
    """Reload every server; returns their ids. ``system``: a system-account connection."""
    ids = await server_ids(system)
    if not ids:
        raise ReloadError("no nats-server answered the system account's ping")
    for server_id in ids:
        reply = await system.request(f"$SYS.REQ.SERVER.{server_id}.RELOAD", b"", timeout=timeout)
        error = json.loads(reply.data).get("error")
        if error:
            raise ReloadError(f"server {server_id} did not reload: {error}")
        log.info("nats-server %s reloaded its users", server_id)
    return ids


async def publish_users(
    settings: NatsSettings, auth: AuthDir, stage_consumers: Iterable[StageConsumer],
    url: str | None = None,
) -> list[str]:
    """Render ``auth.conf`` from the registry and make every server reload it."""
    auth.render(stage_consumers)
    as_system = settings.model_copy(update={"credentials": auth.seed_file(Role.SYSTEM)})
    system = await connect(as_system, name="mumu-users", url=url, role=Role.SYSTEM)
    try:
        return await reload_servers(system)
    finally:
        await system.close()

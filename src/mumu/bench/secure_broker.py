"""The two brokers `mumu bench runtime --secure` compares, started side by side.

- plain: an embedded nats-server without users and without TLS (anonymous, plaintext);
- secure: the same server with every user `mumu up` creates (an ``AuthDir``: nkey users
  with their permissions for each service role, the operator, the system user and a
  producer of the bench workspace), TLS on client connections with client certificates
  required (``verify``), from a throw-away CA (``mumu.bench.pki``).

The relays of the bench have no production role. Each gets an nkey user of its own, with
least-privilege permissions shaped like a service's (consume its durable, publish its next
hop and dead letters, its own inbox), added only to this benchmark's auth file: the
production roles and ``auth.conf`` are untouched.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from mumu.bench.pki import make_pki
from mumu.bench.relay import Relay
from mumu.bench.runtime_chains import HOPS, WS
from mumu.bench.stream import STREAM_BENCH
from mumu.broker import roles
from mumu.broker.credentials import AuthDir, new_seed, public_key, write_secret
from mumu.broker.embedded import EmbeddedNats
from mumu.broker.settings import NatsServerTlsSettings, NatsSettings, NatsTlsSettings
from mumu.contracts import subjects
from mumu.contracts.consumers import StageConsumer
from mumu.runtime.stage import durable_of
from mumu.stages.registry import STAGES


@dataclass(frozen=True)
class Broker:
    """A running server and the client settings of everything that talks to it."""

    server: EmbeddedNats
    nats: NatsSettings
    """URL, TLS and credentials: a directory of ``<role>.nk`` seeds, the relays' and the
    operator's (the benchmark's own connection), or None on the plain server."""
    users: int
    """nkey users in the server's authorization (0: anonymous)."""


def relay_permissions(hop: int) -> roles.Permissions:
    """What relay ``hop`` needs, as a stage: its durable on ``MUMU_BENCH``, its next hop,
    its dead letters, its own inbox. Nothing else."""
    relay = Relay(hop)
    (route,) = relay.routes()
    consumer = StageConsumer(relay.name, STREAM_BENCH, durable_of(relay.name, route))
    return roles.Permissions(
        publish=(
            *roles.consume(consumer),
            relay.dst.wildcard,
            subjects.DLQ.stage(relay.name).wildcard,
            subjects.ERROR.wildcard,
        ),
        subscribe=(f"{subjects.service_inbox_prefix(relay.name)}.>",),
    )


def _accounts_of(auth_conf: Path) -> dict[str, dict[str, list[dict[str, object]]]]:
    """The ``accounts`` block of an ``auth.conf`` that ``AuthDir.render`` wrote (JSON)."""
    _, found, rest = auth_conf.read_text().partition("accounts: ")
    block, found_end, _tail = rest.partition("\nsystem_account:")
    if not (found and found_end):
        raise RuntimeError(f"{auth_conf} is not an auth file rendered by mumu")
    accounts: dict[str, dict[str, list[dict[str, object]]]] = json.loads(block)
    return accounts


def bench_users(path: Path) -> tuple[AuthDir, Path, int]:
    """Every production user, plus one per relay; returns the users, the auth file the
    server includes and how many users it holds."""
    users = AuthDir(path)
    users.ensure_services()
    users.add_workspaces([WS])
    write_secret(path / "producer.nk", users.issue_producer(WS))
    production = users.render(STAGES.consumers())
    accounts = _accounts_of(production)
    app = accounts["MUMU"]["users"]
    for hop in range(HOPS):
        seed = users.creds / f"{Relay(hop).name}.nk"
        write_secret(seed, new_seed())
        app.append({"nkey": public_key(seed.read_bytes()),
                    "permissions": relay_permissions(hop).as_config()})
    conf = path / "bench-auth.conf"
    conf.write_text(
        "# mumu bench runtime --secure: the production users and the bench relays\n"
        f"accounts: {json.dumps(accounts, indent=2)}\nsystem_account: SYS\n"
    )
    return users, conf, sum(len(a["users"]) for a in accounts.values())


@contextlib.asynccontextmanager
async def plain_broker(path: Path) -> AsyncIterator[Broker]:
    async with EmbeddedNats(path / "nats") as server:
        yield Broker(server, NatsSettings(url=server.url), users=0)


@contextlib.asynccontextmanager
async def secure_broker(path: Path) -> AsyncIterator[Broker]:
    pki = make_pki(path / "pki")
    users, conf, count = bench_users(path / "auth")
    tls = NatsServerTlsSettings(cert_file=pki.server_cert, key_file=pki.server_key,
                                ca_file=pki.ca, verify=True)
    async with EmbeddedNats(path / "nats", auth_file=conf, tls=tls) as server:
        client_tls = NatsTlsSettings(ca_file=pki.ca, cert_file=pki.client_cert,
                                     key_file=pki.client_key)
        yield Broker(
            server, NatsSettings(url=server.url, credentials=users.creds, tls=client_tls),
            users=count,
        )

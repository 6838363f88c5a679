"""``DirectClient`` on a real nats-server: a directed subscription's JetStream messages
reach the handler, exact and in order, and nothing else does (idle heartbeats, other
subscriptions, and after ``undirect`` everything take nats-py's own path). It overrides a
private method of nats-py: a nats-py that changes it fails here."""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from mumu.broker.credentials import AuthDir
from mumu.broker.direct import DirectClient
from mumu.broker.embedded import EmbeddedNats
from tests.conftest import operator_connection

HEARTBEAT = "Nats-Last-Consumer"


async def test_a_directed_subscription_gets_its_results_direct_and_the_rest_as_before(
    nats_server: EmbeddedNats, broker_users: AuthDir, nc: NATS, caplog: pytest.LogCaptureFixture,
) -> None:
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name="DIRECT_TEST", subjects=["direct.test.>"]))
    client = await operator_connection(nats_server.url, broker_users, client_class=DirectClient)
    assert isinstance(client, DirectClient)
    try:
        direct: list[tuple[str, str, bytes]] = []
        queued: list[Msg] = []
        plain: list[Msg] = []
        heartbeat = asyncio.Event()

        async def handler(subject: str, reply: str, data: bytes) -> None:
            direct.append((subject, reply, data))
            if data == b'{"n":7}':
                raise RuntimeError("a handler that fails once")  # logged; the rest go on

        async def on_queued(msg: Msg) -> None:
            queued.append(msg)
            if msg.headers and HEARTBEAT in msg.headers:
                heartbeat.set()

        async def on_plain(msg: Msg) -> None:
            plain.append(msg)

        inbox = client.new_inbox()
        sub = await client.subscribe(inbox, cb=on_queued)
        client.direct(sub, handler)
        await client.subscribe("direct.plain", cb=on_plain)
        await js.add_consumer("DIRECT_TEST", config=ConsumerConfig(
            deliver_subject=inbox, ack_policy=AckPolicy.NONE, idle_heartbeat=0.5))

        sent = [(f"direct.test.w{n % 3}", f'{{"n":{n}}}'.encode()) for n in range(50)]
        for subject, data in sent:
            await nc.publish(subject, data, headers={"Nats-Msg-Id": data.decode()})
        await nc.publish("direct.plain", b"not jetstream")
        await asyncio.wait_for(heartbeat.wait(), 10)  # after the 50 (the consumer idles)

        assert [(s, d) for s, _, d in direct] == sent  # exact, in order, once
        assert all(r.startswith("$JS.ACK.DIRECT_TEST.") for _, r, _ in direct)
        assert [int(r.split(".")[5]) for _, r, _ in direct] == list(range(1, 51))
        # only status messages took nats-py's path: heartbeats, with their headers parsed
        assert queued and all(not m.data and m.headers for m in queued)
        assert [m.data for m in plain] == [b"not jetstream"]
        assert client.is_connected and "a handler that fails once" in caplog.text

        client.undirect(sub)
        await nc.publish("direct.test.w0", b'{"n":50}')
        async with asyncio.timeout(10):
            while not any(m.data for m in queued):
                await asyncio.sleep(0.05)
        assert [m.data for m in queued if m.data] == [b'{"n":50}']
        assert len(direct) == 50
    finally:
        await client.drain()

"""Workspace A's producer credentials (``mumu workspace credentials``) against the run's
broker: every row of ``nats_table`` (each subject family for B and the services, every
inbox, KV and Object Store bucket, the JetStream API on every stream) must be refused by
the server with a permission violation on exactly that subject, and nothing of B's or
of the services' may reach A. Then dedupe-id forgery: A publishes with the
``Nats-Msg-Id`` B's next ask will carry, and B's ask is still answered."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import nats
import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from mumu.contracts import headers as h
from mumu.contracts import subjects
from mumu.contracts.events import AnswerFinal, TextAsk, new_id
from tests.secrets_scan import words_of
from tests.security.counts import Tally
from tests.security.nats_table import Attack, table, unknown_names
from tests.security.run import SecurityRun

pytestmark = pytest.mark.security
ON_MODULE_LOOP = pytest.mark.asyncio(loop_scope="module")

VIOLATION = re.compile(r'permissions violation for (publish|subscription) to "([^"]*)"', re.I)


@dataclass
class Producer:
    nc: NATS
    workspace: str
    refused: set[tuple[str, str]] = field(default_factory=set)
    received: list[Msg] = field(default_factory=list)

    async def keep(self, msg: Msg) -> None:
        self.received.append(msg)


async def producer(run: SecurityRun, name: str) -> Producer:
    ws = run.ws(name)
    assert ws.producer_seed is not None
    holder: list[Producer] = []

    async def error(exc: Exception) -> None:
        for kind, subject in VIOLATION.findall(str(exc)):
            holder[0].refused.add((kind.lower(), subject.lower()))  # the -ERR is lower case

    nc = await nats.connect(run.nats, nkeys_seed=str(ws.producer_seed), error_cb=error,
                            inbox_prefix=subjects.producer_inbox_prefix(ws.id),
                            allow_reconnect=False)
    holder.append(Producer(nc, ws.id))
    return holder[0]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def operator(run: SecurityRun) -> AsyncIterator[NATS]:
    nc = await nats.connect(run.nats, nkeys_seed=str(run.operator_seed),
                            inbox_prefix=subjects.service_inbox_prefix("operator"))
    yield nc
    await nc.drain()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def a(run: SecurityRun) -> AsyncIterator[Producer]:
    p = await producer(run, "A")
    yield p
    await p.nc.close()


def test_every_name_of_the_subjects_module_is_in_the_attack_table() -> None:
    assert unknown_names() == set(), "cover the new names in tests/security/nats_table.py"


async def kv_buckets(operator: NATS) -> set[str]:
    names = [s.config.name or "" for s in await operator.jetstream().streams_info()]
    return {name.removeprefix("KV_") for name in names if name.startswith("KV_")}


@ON_MODULE_LOOP
async def test_a_s_producer_is_refused_every_subject_inbox_bucket_and_api_of_others(
    run: SecurityRun, a: Producer, operator: NATS, tally: Tally,
) -> None:
    attacks = table(a.workspace, run.ws("B").id, await kv_buckets(operator))
    replies = f"{subjects.producer_inbox_prefix(a.workspace)}.attack"
    await a.nc.subscribe(f"{replies}.>", cb=a.keep)  # where any API answer would come
    for n, attack in enumerate(attacks):
        if attack.action == "publish":
            await a.nc.publish(attack.subject, b"{}", reply=f"{replies}.{n}")
        else:
            await a.nc.subscribe(attack.subject, cb=a.keep)
    await a.nc.flush()
    wanted = {expected(x) for x in attacks}
    with contextlib.suppress(TimeoutError):  # the counts below say which were not refused
        async with asyncio.timeout(15):
            while not wanted <= a.refused and a.nc.is_connected:
                await asyncio.sleep(0.05)
    # B's and the services' traffic, where A tried to listen: none of it may arrive
    b = run.ws("B").id
    for attack in attacks:
        if attack.action == "subscribe":
            await operator.publish(concrete(attack.subject, b), b"B's secret canary")
    await operator.flush()
    await asyncio.sleep(0.5)  # a delivery would be right behind the flush
    leaked = {m.subject for m in a.received}
    for attack in attacks:
        tally.record(f"{attack.family} {attack.action} {attack.subject}",
                     refused=expected(attack) in a.refused,
                     leaked=attack.action == "subscribe" and concrete(attack.subject, b) in leaked)
    assert a.nc.is_connected
    assert a.received == []  # not one API answer, not one canary
    assert tally.new_failures() == []
    with pytest.raises(nats.errors.TimeoutError):  # and the API says nothing either
        await a.nc.request(f"$JS.API.STREAM.INFO.{subjects.intake_stream(b)}", b"", timeout=1)


def expected(attack: Attack) -> tuple[str, str]:
    return ("publish" if attack.action == "publish" else "subscription", attack.subject.lower())


def concrete(subject: str, b: str) -> str:
    """A subject the filter ``subject`` matches (B's where a token is free)."""
    return subject.replace(">", f"{b}.x").replace("*", b)


@ON_MODULE_LOOP
async def test_forging_b_s_dedupe_id_does_not_suppress_b_s_ask(
    run: SecurityRun, a: Producer, tally: Tally,
) -> None:
    b = await producer(run, "B")
    answers: list[AnswerFinal] = []

    async def keep(msg: Msg) -> None:
        answers.append(AnswerFinal.model_validate_json(msg.data))

    try:
        await b.nc.subscribe(subjects.ANSWER_FINAL.for_workspace(b.workspace), cb=keep)
        await b.nc.flush()
        rid = new_id()
        forged = TextAsk(event_id=rid, request_id=rid, workspace_id=b.workspace,
                         session_id="forged", text="A's forged question about nothing")
        js_a = a.nc.jetstream()
        # B's next id as the gateway derives it (with a body naming B), and other spellings
        # of it (bodies the stages dead-letter at once: only the id matters to the dedupe)
        a_acks = [await js_a.publish(subjects.INGEST_TEXT.for_workspace(a.workspace), body,
                                     headers={h.MSG_ID: msg_id})
                  for msg_id, body in ((f"{b.workspace}.{rid}", forged.model_dump_json().encode()),
                                       (rid, b"{}"), (f"{b.workspace}.{rid}.final", b"{}"))]
        question = "Is the pumpernickel hovercraft ready?"
        ask = TextAsk(event_id=rid, request_id=rid, workspace_id=b.workspace,
                      session_id="b-own", text=question)
        ack = await b.nc.jetstream().publish(
            subjects.INGEST_TEXT.for_workspace(b.workspace), ask.model_dump_json().encode(),
            headers={h.MSG_ID: f"{b.workspace}.{rid}"})
        async with asyncio.timeout(90):
            while not any(x.request_id == rid for x in answers):
                await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # an answer to A's forgery would follow it
    finally:
        await b.nc.close()
    run.words.update(words_of(question, *(x.text for x in answers)))
    mine = [x for x in answers if x.request_id == rid]
    tally.record("Nats-Msg-Id forgery", refused=not bool(ack.duplicate) and len(mine) == 1
                 and mine[0].question == question and mine[0].session_id == "b-own",
                 leaked=any(x.session_id == "forged" for x in answers))
    assert [bool(x.duplicate) for x in a_acks] == [False, False, False]
    assert ack.stream == subjects.intake_stream(b.workspace) and not bool(ack.duplicate)
    assert [(x.question, x.session_id) for x in answers] == [(question, "b-own")]
    assert tally.new_failures() == []


@ON_MODULE_LOOP
async def test_a_s_producer_cannot_list_other_workspaces(
    run: SecurityRun, a: Producer, tally: Tally,
) -> None:
    names: list[str] = []
    with contextlib.suppress(nats.errors.TimeoutError, nats.errors.NoRespondersError):
        reply = await a.nc.request("$JS.API.STREAM.NAMES", b"{}", timeout=2)
        names = json.loads(reply.data).get("streams") or []
    disclosed = [n for n in names if run.ws("B").id in n]
    refused = ("publish", "$js.api.stream.names") in a.refused
    tally.record("stream names list B's workspace", refused=refused and not disclosed)
    assert refused
    assert disclosed == []

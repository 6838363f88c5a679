"""The workspace is a security boundary on the broker (real nats-server, real users).

Each refusal is checked twice: the action fails, and the server reports a permission
violation on that exact subject, so a test cannot pass by timing out for another reason.
Each test also shows the same user CAN do the allowed neighbour of the refused action.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import nats
import nats.errors
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import StreamConfig

from mumu.bench.stream import STREAM_BENCH
from mumu.broker.connect import connect
from mumu.broker.credentials import AuthDir, new_seed, public_key, write_secret
from mumu.broker.embedded import EmbeddedNats
from mumu.broker.reload import publish_users
from mumu.broker.roles import Role
from mumu.broker.settings import NatsSettings
from mumu.contracts import headers as h
from mumu.contracts import subjects
from mumu.contracts.events import AnswerFinal, AudioReady, TextAsk, new_id
from mumu.runtime.metrics import StageMetrics
from mumu.runtime.process import run_stage
from mumu.settings import Settings
from mumu.stages.ingest.stage import build_stage as build_ingest
from mumu.stages.reason.stage import ReasonStage
from mumu.stages.registry import STAGES
from tests.audio.conftest import SPEECH, publish_audio
from tests.conftest import Ensure, nats_env
from tests.harness import Collector, running
from tests.passthrough import PassThrough
from tests.reason.echo_backend import EchoBackend

pytestmark = pytest.mark.security

WS_A = "aaaaaaaa-0000-4000-8000-00000000000a"
WS_B = "bbbbbbbb-0000-4000-8000-00000000000b"
ROOT = Path(__file__).parents[2]
SPEECH_CLIP = SPEECH / "en05.wav"


class Producer:
    """A raw nats-py producer connected with a workspace's credentials file."""

    def __init__(self, nc: NATS, violations: list[str]) -> None:
        self.nc = nc
        self.violations = violations

    async def refused(self, subject: str, timeout: float = 10.0) -> None:
        """Wait until the server reported a violation on ``subject``."""
        async with asyncio.timeout(timeout):
            while not any(f'"{subject.lower()}"' in v.lower() for v in self.violations):
                await asyncio.sleep(0.02)


async def as_producer(url: str, seed_file: Path, workspace: str) -> Producer:
    violations: list[str] = []

    async def error(exc: Exception) -> None:
        violations.append(str(exc))

    nc = await nats.connect(
        url, nkeys_seed=str(seed_file), inbox_prefix=subjects.producer_inbox_prefix(workspace),
        error_cb=error, allow_reconnect=False,
    )
    return Producer(nc, violations)


async def issue(server: EmbeddedNats, users: AuthDir, workspace: str, folder: Path) -> Path:
    seed_file = folder / f"{workspace}.nk"
    write_secret(seed_file, users.issue_producer(workspace))
    await publish_users(NatsSettings(), users, STAGES.consumers(), url=server.url)
    return seed_file


@pytest.fixture
async def producers(
    nats_server: EmbeddedNats, broker_users: AuthDir, nc: NATS, streams: None, tmp_path: Path,
    workspaces: Ensure,
) -> AsyncIterator[tuple[Producer, Producer]]:
    await workspaces(WS_A, WS_B)  # what `mumu workspace create` provisions
    a_file = await issue(nats_server, broker_users, WS_A, tmp_path)
    b_file = await issue(nats_server, broker_users, WS_B, tmp_path)
    a = await as_producer(nats_server.url, a_file, WS_A)
    b = await as_producer(nats_server.url, b_file, WS_B)
    try:
        yield a, b
    finally:
        await a.nc.close()
        await b.nc.close()


async def test_a_connection_without_or_with_unknown_credentials_is_refused(
    nats_server: EmbeddedNats,
) -> None:
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(nats_server.url, allow_reconnect=False, connect_timeout=2)
    stranger = new_seed()  # a well-formed nkey nobody registered
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(nats_server.url, nkeys_seed_str=stranger.decode(),
                           allow_reconnect=False, connect_timeout=2)
    log = (nats_server.data_dir / "nats-server.log").read_text()
    assert stranger.decode() not in log  # the server never sees a seed, let alone logs it


async def test_a_producer_publishes_into_its_own_workspace_only(
    producers: tuple[Producer, Producer],
) -> None:
    a, _ = producers
    js = a.nc.jetstream()
    ack = await js.publish(subjects.INGEST_TEXT.for_workspace(WS_A), b"{}", timeout=5)
    assert ack.seq >= 1 and not ack.duplicate  # the PubAck reached A's own inbox
    for subject in (subjects.INGEST_TEXT.for_workspace(WS_B),
                    subjects.INGEST_AUDIO.for_workspace(WS_B),
                    subjects.ANSWER_FINAL.for_workspace(WS_A)):  # no forging results either
        with pytest.raises(nats.errors.TimeoutError):
            await js.publish(subject, b"{}", timeout=1)
        await a.refused(subject)


async def test_a_producer_cannot_listen_to_inboxes_services_or_another_workspace(
    producers: tuple[Producer, Producer], nc: NATS,
) -> None:
    a, _ = producers
    got: list[Msg] = []

    async def keep(msg: Msg) -> None:
        got.append(msg)

    for subject in ("_INBOX.>", "mumu.>", f"{subjects.SERVICE_INBOX}.>",
                    subjects.ANSWER_FINAL.for_workspace(WS_B),
                    subjects.TRANSCRIPT_FINAL.for_workspace(WS_B),
                    subjects.ERROR.for_workspace(WS_B)):
        await a.nc.subscribe(subject, cb=keep)
        await a.refused(subject)
    own = await a.nc.subscribe(subjects.ANSWER_FINAL.for_workspace(WS_A), cb=keep)
    await a.nc.flush()
    # traffic A must not see: B's answer, a service's inbox, B's producer inbox
    for subject in (subjects.ANSWER_FINAL.for_workspace(WS_B),
                    f"{subjects.service_inbox_prefix('gateway')}.x",
                    f"{subjects.producer_inbox_prefix(WS_B)}.x"):
        await nc.publish(subject, b"secret")
    # "mine" again every second until it arrives (core NATS delivers at most once: in CI
    # one copy once went missing under load), each after the secrets on this connection
    async with asyncio.timeout(20):  # generous: the CI's other worker may be loading models
        while not got:
            await nc.publish(subjects.ANSWER_FINAL.for_workspace(WS_A), b"mine")
            await nc.flush()
            for _ in range(50):
                if got:
                    break
                await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)  # anything else in flight would have arrived with "mine"
    assert {(m.subject, m.data) for m in got} == {
        (subjects.ANSWER_FINAL.for_workspace(WS_A), b"mine")
    }
    await own.unsubscribe()


async def test_a_producer_uses_only_its_own_upload_bucket(
    producers: tuple[Producer, Producer], nc: NATS,
) -> None:
    a, b = producers
    mine = await b.nc.jetstream().object_store(subjects.upload_bucket(WS_B))
    await mine.put("b-question.wav", b"RIFF-b-audio")
    own = await a.nc.jetstream().object_store(subjects.upload_bucket(WS_A))
    await own.put("a-question.wav", b"RIFF" + bytes(300_000))  # several chunks
    service = await nc.jetstream().object_store(subjects.upload_bucket(WS_A))
    assert (await service.get("a-question.wav")).data == b"RIFF" + bytes(300_000)
    # uploads are write-only for a producer: reading back needs STREAM.NAMES, whose
    # answer would name every workspace
    impatient = await a.nc.jetstream(timeout=1).object_store(subjects.upload_bucket(WS_A))
    with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
        await impatient.get("a-question.wav")
    await a.refused("$JS.API.STREAM.NAMES")
    with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
        await a.nc.jetstream(timeout=1).object_store(subjects.upload_bucket(WS_B))
    await a.refused(f"$JS.API.STREAM.INFO.OBJ_{subjects.upload_bucket(WS_B)}")
    # writing straight to B's bucket subjects is refused too
    await a.nc.publish(f"$O.{subjects.upload_bucket(WS_B)}.C.x", b"junk")
    await a.refused(f"$O.{subjects.upload_bucket(WS_B)}.C.x")
    b_copy = await nc.jetstream().object_store(subjects.upload_bucket(WS_B))
    assert (await b_copy.get("b-question.wav")).data == b"RIFF-b-audio"


async def test_a_producer_cannot_read_sessions_or_manage_streams(
    producers: tuple[Producer, Producer], nc: NATS,
) -> None:
    a, _ = producers
    js = a.nc.jetstream(timeout=1)
    refusals: list[tuple[Callable[[], Awaitable[object]], str]] = [
        (lambda: js.key_value(subjects.BUCKET_SESSIONS),
         f"$JS.API.STREAM.INFO.KV_{subjects.BUCKET_SESSIONS}"),
        (lambda: js.get_msg(f"KV_{subjects.BUCKET_SESSIONS}", 1),
         f"$JS.API.STREAM.MSG.GET.KV_{subjects.BUCKET_SESSIONS}"),
        (lambda: js.delete_stream(subjects.STREAM_RESULTS),
         f"$JS.API.STREAM.DELETE.{subjects.STREAM_RESULTS}"),
        (lambda: js.add_stream(StreamConfig(name="STOLEN", subjects=["stolen.>"])),
         "$JS.API.STREAM.CREATE.STOLEN"),
        (lambda: js.purge_stream(subjects.STREAM_INGEST),
         f"$JS.API.STREAM.PURGE.{subjects.STREAM_INGEST}"),
        (lambda: js.consumer_info(subjects.STREAM_RESULTS, "persist-mumu-results"),
         f"$JS.API.CONSUMER.INFO.{subjects.STREAM_RESULTS}.persist-mumu-results"),
        (lambda: js.add_consumer(subjects.STREAM_RESULTS, durable_name="spy"),
         f"$JS.API.CONSUMER.DURABLE.CREATE.{subjects.STREAM_RESULTS}.spy"),
    ]
    for call, subject in refusals:
        with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
            await call()
        await a.refused(subject)
    assert (await nc.jetstream().stream_info(subjects.STREAM_RESULTS)).config.name


@pytest.mark.parametrize(("role", "subject"), [
    (Role.TRANSCRIBE, f"$JS.API.STREAM.DELETE.{subjects.STREAM_RESULTS}"),
    (Role.REASON, f"$JS.API.CONSUMER.CREATE.{subjects.STREAM_DLQ}"),
    (Role.INGEST, subjects.ANSWER_FINAL.for_workspace(WS_A)),
    (Role.PERSIST, subjects.INGEST_TEXT.for_workspace(WS_A)),
    (Role.GATEWAY, f"$JS.API.STREAM.PURGE.{subjects.STREAM_INGEST}"),
])
async def test_each_service_is_refused_what_it_does_not_need(
    role: Role, subject: str, settings: Settings, streams: None, nats_server: EmbeddedNats,
    broker_users: AuthDir,
) -> None:
    counted: list[str] = []
    service = await connect(settings.nats, name=f"test-{role}", role=role,
                            on_violation=counted.append)
    try:
        await service.publish(subject, b"{}", reply=service.new_inbox())
        async with asyncio.timeout(5):
            while subject.lower() not in [c.lower() for c in counted]:
                await asyncio.sleep(0.02)
    finally:
        await service.close()
    # the server's log names the user (its public key) and the subject, never a secret
    user = public_key(broker_users.seed_file(role).read_bytes())
    log = (nats_server.data_dir / "nats-server.log").read_text()
    lines = [line for line in log.splitlines() if f'Subject "{subject}"' in line]
    assert lines and f"nkey:{user}" in lines[-1]


async def test_a_service_may_do_its_own_work(
    settings: Settings, streams: None,
) -> None:
    service = await connect(settings.nats, name="test-reason", role=Role.REASON)
    try:
        js = service.jetstream()
        ack = await js.publish(subjects.ANSWER_FINAL.for_workspace(WS_A), b"{}", timeout=5)
        assert ack.stream == subjects.STREAM_RESULTS
        kv = await js.key_value(subjects.BUCKET_SESSIONS)
        await kv.put(f"{WS_A}.s1", b"turns")
        assert (await kv.get(f"{WS_A}.s1")).value == b"turns"
    finally:
        await service.close()


async def mumu_cli(env: dict[str, str], *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mumu", *args, cwd=ROOT,
        env={**os.environ, **env, "MUMU_LOG_LEVEL": "WARNING"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode()


async def test_issued_credentials_work_and_revoking_them_closes_the_connection_within_5s(
    nats_server: EmbeddedNats, broker_users: AuthDir, streams: None, tmp_path: Path,
    workspaces: Ensure,
) -> None:
    await workspaces(WS_A)
    env = {**nats_env(nats_server), "MUMU_NATS__AUTH_DIR": str(broker_users.path)}
    out_file = tmp_path / "producer.nk"
    code, out = await mumu_cli(env, "workspace", "credentials", WS_A, "--out", str(out_file))
    assert code == 0, out
    assert out_file.stat().st_mode & 0o777 == 0o600
    assert out_file.read_bytes().decode() not in out  # the secret is never printed
    a = await as_producer(nats_server.url, out_file, WS_A)
    ack = await a.nc.jetstream().publish(subjects.INGEST_TEXT.for_workspace(WS_A), b"{}")
    assert ack.seq >= 1
    revoked_at = time.monotonic()
    code, out = await mumu_cli(env, "workspace", "credentials", WS_A, "--revoke")
    assert code == 0, out
    async with asyncio.timeout(5 - (time.monotonic() - revoked_at)):
        while a.nc.is_connected:
            await asyncio.sleep(0.02)
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await as_producer(nats_server.url, out_file, WS_A)


async def test_a_service_whose_credentials_are_rotated_reconnects_and_loses_nothing(
    nats_server: EmbeddedNats, broker_users: AuthDir, nc: NATS, streams: None,
    settings: Settings,
) -> None:
    env = {**nats_env(nats_server), "MUMU_NATS__AUTH_DIR": str(broker_users.path)}
    old_seed = broker_users.seed_file(Role.INGEST).read_bytes()
    async with running(build_ingest(settings), settings), Collector(nc) as seen:
        first = await publish_audio(nc, SPEECH_CLIP.read_bytes())
        await seen.wait_count("mumu.audio.ready.", 1, timeout=30)
        # the seed leaked: rotate it; the running stage's connection is closed at once
        code, out = await mumu_cli(env, "auth", "rotate", "ingest")
        assert code == 0, out
        assert broker_users.seed_file(Role.INGEST).read_bytes() != old_seed
        # work arriving meanwhile waits in JetStream; the stage reconnects with the new seed
        later = [await publish_audio(nc, SPEECH_CLIP.read_bytes()) for _ in range(3)]
        ready = await seen.wait_count("mumu.audio.ready.", 4, timeout=60)
        await asyncio.sleep(1.0)  # a duplicate would be published right behind
    ids = [AudioReady.model_validate_json(m.data).request_id for m in seen.on("mumu.audio.ready.")]
    assert sorted(ids) == sorted([first, *later]), ready
    # the old seed is refused now
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(nats_server.url, nkeys_seed_str=old_seed.decode(),
                           allow_reconnect=False, connect_timeout=2)


class ClosedOnItsOwn(NATS):
    """nats-py's own close won the race: after the server's -ERR in a reconnect handshake
    it closes without callbacks, and the close asked for afterwards returns at once."""

    async def close(self) -> None:
        await self._close(NATS.CLOSED, do_cbs=False)


async def test_a_connection_closed_for_refused_credentials_is_reported_whoever_closed_it(
    nats_server: EmbeddedNats, broker_users: AuthDir, settings: Settings,
) -> None:
    """The stage reconnects with a rotated seed only once its connection is reported
    closed (``on_closed``). A CI run once stayed stuck after "closing to reconnect": the
    report hung on nats-py's ``closed_cb``, which the losing close never calls."""
    env = {**nats_env(nats_server), "MUMU_NATS__AUTH_DIR": str(broker_users.path)}
    lost = asyncio.Event()
    service = await connect(settings.nats, name="test-ingest", role=Role.INGEST,
                            on_closed=lost.set, client=ClosedOnItsOwn)
    try:
        code, out = await mumu_cli(env, "auth", "rotate", "ingest")
        assert code == 0, out
        await asyncio.wait_for(lost.wait(), 15)
    finally:
        await service.close()


async def test_a_producer_asks_with_its_credentials_and_receives_only_its_own_answer(
    producers: tuple[Producer, Producer], settings: Settings,
) -> None:
    """End to end with producer credentials: publish into its own intake, the PubAck comes
    back on its own inbox, the real reason stage answers (a deterministic backend: the
    LLM is not what is tested here), the answer reaches A and not B."""
    a, b = producers
    got: dict[str, list[AnswerFinal]] = {WS_A: [], WS_B: []}

    def keep(ws: str) -> Callable[[Msg], Awaitable[None]]:
        async def on(msg: Msg) -> None:
            got[ws].append(AnswerFinal.model_validate_json(msg.data))
        return on

    await a.nc.subscribe(subjects.ANSWER_FINAL.for_workspace(WS_A), cb=keep(WS_A))
    await b.nc.subscribe(subjects.ANSWER_FINAL.for_workspace(WS_B), cb=keep(WS_B))
    await a.nc.flush()
    await b.nc.flush()
    rid = new_id()
    ask = TextAsk(event_id=rid, request_id=rid, workspace_id=WS_A, session_id="s1",
                  text="Is anyone there?")
    async with running(ReasonStage(settings.reason, EchoBackend()), settings):
        ack = await a.nc.jetstream().publish(
            subjects.INGEST_TEXT.for_workspace(WS_A), ask.model_dump_json().encode(),
            headers={h.MSG_ID: f"{WS_A}.{rid}"},
        )
        assert ack.stream == subjects.intake_stream(WS_A)
        async with asyncio.timeout(30):
            while not got[WS_A]:
                await asyncio.sleep(0.05)
    assert [(f.request_id, f.text) for f in got[WS_A]] == [(rid, "You asked: Is anyone there?")]
    assert got[WS_B] == []


async def test_a_stage_counts_the_permission_violations_it_meets(
    settings: Settings, streams: None, broker_users: AuthDir,
) -> None:
    """A stage run with credentials that do not allow its work (here the test relay with
    the persist role's seed) fails to start, and its metrics say why."""
    wrong = settings.nats.model_copy(
        update={"credentials": broker_users.seed_file(Role.PERSIST)})
    metrics = StageMetrics("passthrough")
    stop = asyncio.Event()
    with pytest.raises(nats.errors.TimeoutError):
        await run_stage(PassThrough(), settings.model_copy(update={"nats": wrong}), stop,
                        metrics=metrics)
    subject = f"$JS.API.STREAM.INFO.{STREAM_BENCH}".lower()
    assert metrics.registry.get_sample_value(
        "mumu_nats_permission_violations_total", {"stage": "passthrough", "subject": subject}
    ) == 1

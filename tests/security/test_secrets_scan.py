"""After the attacks (this module runs last in the folder; run alone it makes its own
traffic): some more asks and error cases, every process's ``/metrics`` body saved, the run
stopped so every process wrote its last line, and then ``tests/secrets_scan.py`` over all
the logs, metrics and error bodies: none may hold a secret of the run or a word a client
asked or was answered with."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import aiohttp
import nats
import pytest

from mumu.contracts import subjects
from tests.secrets_scan import Secret, distinctive, save_metrics, scan, words_of
from tests.security.counts import Tally
from tests.security.gateway_kit import Client, flipped_signature
from tests.security.run import SecurityRun

pytestmark = pytest.mark.security

PROBES = re.compile(r"probes on (http://127\.0\.0\.1:\d+)")
CONTROL_CANARY = '{"request_id": "r1", "note": "the bathyscaphe passphrase"}'
QUESTION = "Where does the pumpernickel albatross keep its lanternfish?"


def probe_urls(run: SecurityRun) -> list[str]:
    """``/metrics`` of every stage process (from its "probes on" log line)."""
    found = {m for path in (run.data_dir / "logs").glob("*.log")
             for m in PROBES.findall(path.read_text(errors="replace"))}
    return sorted(f"{url}/metrics" for url in found)


async def errors_and_asks(run: SecurityRun, http: aiohttp.ClientSession) -> None:
    """What a client does wrong, and one more answered question."""
    c = Client(run, http)
    a = await c.session(run.ws("A").api_key)
    token = a["token"]
    asked = await c.ask(token, QUESTION)
    assert asked.status == 200, asked.text
    run.words.update(words_of(QUESTION))
    junk = aiohttp.FormData()
    junk.add_field("audio", b"RIFF\x00\x00not really a wave file" * 40, filename="junk.wav")
    cases = [
        await c.call("POST", "/api/ask?wait=true", token, data=junk,
                     timeout=aiohttp.ClientTimeout(total=60)),
        await c.call("POST", "/api/ask", token, json={"text": "x" * 100_000}),
        await c.call("POST", "/api/ask", token, data=b"{not json",
                     headers={"Content-Type": "application/json"}),
        await c.call("POST", "/api/ask", flipped_signature(token), json={"text": QUESTION}),
        await c.call("POST", "/api/session", run.ws("B").api_key[:-3] + "xyz"),
        await c.call("GET", f"/api/sessions/{a['session_id']}x/history", token),
        await c.call("GET", "/api/ws?token=" + token[:-4]),
        await c.call("GET", "/nowhere/" + run.ws("B").api_key),
    ]
    assert all(r.status >= 400 for r in cases[1:]), [(r.status, r.text) for r in cases]
    async with http.ws_connect(run.gateway.replace("http", "ws") + "/api/ws") as sock:
        await sock.send_json({"type": "auth", "token": token})
        await sock.send_str("{broken")
        async with asyncio.timeout(30):
            while '"error"' not in (frame := await sock.receive_str()):
                pass
        run.error_body("socket", 0, frame)


async def malformed_control_messages(run: SecurityRun) -> None:
    """Cancels and shred notices that do not parse, as an operator's typo would send them:
    the stages log that they ignored them, without their bytes."""
    nc = await nats.connect(run.nats, nkeys_seed=str(run.operator_seed),
                            inbox_prefix=subjects.service_inbox_prefix("operator"))
    try:
        for pattern in (subjects.CONTROL_CANCEL, subjects.CONTROL_SHRED):
            await nc.publish(pattern.for_workspace(run.ws("B").id), CONTROL_CANARY.encode())
        await nc.flush()
    finally:
        await nc.drain()
    run.words.update(words_of(CONTROL_CANARY))


async def test_no_log_metric_or_error_body_of_the_run_holds_a_secret_or_a_user_s_words(
    run: SecurityRun, tally: Tally, capsys: pytest.CaptureFixture[str],
) -> None:
    async with aiohttp.ClientSession() as http:
        await errors_and_asks(run, http)
        await malformed_control_messages(run)
        urls = [f"{run.gateway}/metrics", run.metrics, *probe_urls(run)]
        bodies = await save_metrics(http, urls, run.folder / "metrics")
    assert len(urls) >= 6  # the gateway, the exporter and the four stages
    assert run.stop() == 0
    words = distinctive(run.words)
    assert words_of(QUESTION) & words  # the scan looks for what was said
    sources = [*run.log_files(), *bodies, run.errors_dir]
    # the scan reads what the processes wrote: their logs name the workspaces they served
    assert scan(run.log_files(), [Secret("workspace id of A", run.ws("A").id)])
    findings = scan(sources, run.secrets, words)
    for secret in run.secrets:
        tally.record(f"secret {secret.label}",
                     refused=not any(f.what.startswith(secret.label) for f in findings))
    for word in sorted(words):
        tally.record(f"word {word}", refused=not any(f.what == f"word {word!r}"
                                                       for f in findings))
    files = [p for p in sources if p.is_file()] + list(run.errors_dir.glob("*"))
    with capsys.disabled():
        print(f"\nsecrets scan: {len(files)} files, {len(run.secrets)} secrets, "
              f"{len(words)} words, {len(findings)} findings")
    assert [str(f) for f in findings] == []


def test_the_scan_finds_a_planted_secret_and_word_and_nothing_else(tmp_path: Path) -> None:
    """The helper can fail: a secret in a log, quoted in a URL and in base64, and a word."""
    log = tmp_path / "svc.log"
    log.write_text('{"msg": "connected"}\n'
                   '{"msg": "dsn postgresql://app:s3cr%2Fet-pass@db"}\n'
                   '{"msg": "header czNjci9ldC1wYXNz"}\n'
                   '{"msg": "answer: Lanternfish live deep"}\n')
    found = scan([tmp_path], [Secret("db password", "s3cr/et-pass"), Secret("short", "abc")],
                 distinctive(["lanternfish", "deep"]))
    assert [(f.line, f.what) for f in found] == [
        (2, "db password (url-quoted)"), (3, "db password (base64)"), (4, "word 'lanternfish'")]
    assert "s3cr" not in " ".join(map(str, found))  # a finding never shows the secret

"""Generated multipart forms (``form_strategies``) against the OpenAI audio routes of the real
gateway, with the real ingest and transcribe stages and a real PostgreSQL: every answer
is a 200 (the valid form always is one, in the format it asked for) or a 4xx in the
gateway's error shape, never a 5xx; and the gateway keeps transcribing."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from dataclasses import replace
from pathlib import Path
from typing import get_origin

import aiohttp
import pytest
from hypothesis import strategies as st
from nats.aio.client import Client as NATS

from mumu.gateway.models import TranscriptionForm, TranslationForm
from mumu.settings import Settings
from tests.conftest import Ensure
from tests.fuzz.deadletters import run_examples
from tests.fuzz.form_strategies import VALID, Form, Part, forms
from tests.gateway.conftest import WS_A, gateway_settings, serving
from tests.gateway.pipeline import pipeline_settings, stages
from tests.pg_fixtures import WorkspaceFactory

pytestmark = [pytest.mark.fuzz, pytest.mark.slow, pytest.mark.timeout(600)]

EXAMPLES = 15
ROUTES = ("/v1/audio/transcriptions", "/v1/audio/translations")
REFUSALS = {400, 413, 415, 422}
EXPECTED = {"quick", "brown", "fox", "lazy", "dog"}
"""Words of ``VALID``'s clip (Whisper may mishear one of the others)."""
BODY_LIMIT = 1024 * 1024
SINGLE = {  # the fields of each route's form that are no list
    route: {name for name, f in model.model_fields.items() if get_origin(f.annotation) is not list}
    for route, model in zip(ROUTES, (TranscriptionForm, TranslationForm), strict=True)}


def multipart(parts: tuple[Part, ...]) -> tuple[bytes, str]:
    """(body, boundary) of a form as a browser encodes it (``"``, CR and LF in names
    percent-encoded), whatever the names and values: no client library refuses it."""
    boundary = uuid.uuid4().hex
    out = bytearray()
    for p in parts:
        name = p.name.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")
        disposition = f'form-data; name="{name}"'
        if p.filename is not None:
            disposition += f'; filename="{p.filename}"'
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode()
        if p.content_type is not None:
            out += f"Content-Type: {p.content_type}\r\n".encode()
        out += b"\r\n" + (p.value.encode() if isinstance(p.value, str) else p.value) + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), boundary


def body_of(form: Form) -> tuple[bytes, dict[str, str]]:
    """What the client sends: a multipart form, or another body under its content type."""
    if form.envelope == "multipart":
        body, boundary = multipart(form.parts)
        return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    fields = {p.name: p.value if isinstance(p.value, str) else p.value[:64].hex()
              for p in form.parts}
    return {
        "json": (json.dumps(fields).encode(), {"Content-Type": "application/json"}),
        "urlencoded": (b"model=whisper-1&file=abc", {
            "Content-Type": "application/x-www-form-urlencoded"}),
        "text": (b"file=abc", {"Content-Type": "text/plain"}),
        "broken_multipart": (b"--zz\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nab", {
            "Content-Type": "multipart/form-data; boundary=zz"}),
        "no_boundary": (b"--zz\r\n\r\n", {"Content-Type": "multipart/form-data"}),
    }[form.envelope]


async def metrics(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(f"{url}/metrics") as resp:
        return await resp.text()


async def counted(http: aiohttp.ClientSession, url: str, route: str, status: str = "") -> float:
    """Requests the gateway counted on routes starting with ``route`` (and statuses
    starting with ``status``)."""
    pattern = re.compile(r'^mumu_gateway_requests_total\{route="([^"]*)",status="([^"]*)"\} (\S+)$',
                         re.M)
    return sum(float(n) for r, s, n in pattern.findall(await metrics(http, url))
               if r.startswith(route) and s.startswith(status))


async def cut_upload(url: str, route: str, bearer: str) -> None:
    """Half of a valid form's body, then the connection closes."""
    host, port = url.removeprefix("http://").split(":")
    body, boundary = multipart(VALID.parts)
    head = (f"POST {route} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {bearer}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    _, writer = await asyncio.open_connection(host, int(port))
    writer.write(head.encode() + body[: len(body) // 2])
    await writer.drain()
    writer.close()
    await writer.wait_closed()


def twice(form: Form, route: str) -> bool:
    """A field of the route's form, not a list, given twice."""
    names = [p.name for p in form.parts if p.name in SINGLE[route]]
    return len(names) != len(set(names))


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def check_success(form: Form, route: str, response: aiohttp.ClientResponse, body: bytes
                  ) -> None:
    """A 200 is in the format asked for."""
    fields = {p.name: p.value for p in form.parts}
    fmt = fields.get("response_format", "json")
    if fields.get("stream") in ("true", "1") and route.endswith("transcriptions"):
        assert response.content_type == "text/event-stream", response.content_type
        assert b"transcript.text.done" in body, body[-300:]
    elif fmt in ("json", "verbose_json"):
        assert isinstance(json.loads(body)["text"], str), body[:300]
    else:
        assert response.content_type.startswith(("text/", "application/x-subrip")), fmt
    if form.changes == 0 and route.endswith("transcriptions"):
        assert words(json.loads(body)["text"]) >= EXPECTED, body[:300]


async def test_generated_forms_get_a_200_or_a_clear_4xx_never_a_5xx(
    nc: NATS, streams: None, workspaces: Ensure, settings: Settings, pg_settings: Settings,
    workspace: WorkspaceFactory, tmp_path: Path,
) -> None:
    cfg = gateway_settings(pipeline_settings(settings, tmp_path.parent / "models"),
                           wait_timeout=120.0, max_body_bytes=BODY_LIMIT,
                           rate_limit_burst=10_000, rate_limit_per_second=1_000.0)
    cfg = cfg.model_copy(update={"database_url": pg_settings.database_url,
                                 "master_keys": pg_settings.master_keys})
    ws, api_key = await workspace("fuzz-forms")
    await workspaces(ws)
    auth = {"Authorization": f"Bearer {api_key}"}
    loop = asyncio.get_running_loop()
    statuses: dict[int, int] = {}
    async with stages(cfg, reason=False), serving(cfg) as gw, aiohttp.ClientSession() as http:

        async def post(form: Form, route: str) -> int:
            data, headers = body_of(form)
            async with http.post(gw.url + route, data=data, headers={**auth, **headers}) as resp:
                body = await resp.read()
                status = resp.status
                if status == 200:
                    check_success(form, route, resp, body)
                else:
                    assert status in REFUSALS, (status, body[:500], form)
                    error = json.loads(body)["error"]
                    assert error["code"] and error["message"] and error["request_id"], error
                    assert form.changes, ("the valid form was refused", body[:500])
            statuses[status] = statuses.get(status, 0) + 1
            if form.envelope == "multipart" and twice(form, route):
                assert status in (400, 413), (status, body[:300])  # 413: over the limit
            return status

        async def one(example: tuple[Form, str]) -> None:
            await post(*example)

        await asyncio.to_thread(run_examples, loop, st.tuples(forms, st.sampled_from(ROUTES)),
                                one, EXAMPLES, 150)
        # the gateway still transcribes after all of it
        assert await post(VALID, ROUTES[0]) == 200
        # a field given twice is refused, whichever one the client meant (was: the first won)
        for part in VALID.parts:
            assert await post(replace(VALID, parts=(*VALID.parts, part), changes=1),
                              ROUTES[1]) == 400
        assert statuses[400] >= 2
        # and bytes that are no audio are a 415, before anything is published
        garbage = Part("file", b"\x00 no audio here", "x.wav", "audio/wav")
        assert await post(replace(VALID, parts=(garbage, VALID.parts[1]), changes=1),
                          ROUTES[0]) == 415
        # nothing the gateway answered all along was a 5xx, not even to a client gone
        assert not await counted(http, gw.url, "", status="5"), await metrics(http, gw.url)
    assert statuses.get(200) and len(set(statuses) & REFUSALS) >= 2, statuses


async def test_a_form_cut_off_or_with_a_field_twice_is_the_clients_400(
    nc: NATS, streams: None, settings: Settings,
) -> None:
    """A client gone in the middle of its upload is counted (and logged) as the client's
    400, not as the gateway's 500; a field given twice is a 400 naming it."""
    async with serving(gateway_settings(settings)) as gw, aiohttp.ClientSession() as http:
        await cut_upload(gw.url, "/api/ask", gw.token(WS_A))
        async with asyncio.timeout(30):
            while not await counted(http, gw.url, "/api/ask"):
                await asyncio.sleep(0.05)
        assert await counted(http, gw.url, "/api/ask", status="400") == 1
        # and a form with its audio twice is refused (was: the first one was asked)
        clip = VALID.parts[0]
        body, boundary = multipart((replace(clip, name="audio"), replace(clip, name="audio")))
        async with http.post(f"{gw.url}/api/ask", data=body, headers={
                "Authorization": f"Bearer {gw.token(WS_A)}",
                "Content-Type": f"multipart/form-data; boundary={boundary}"}) as resp:
            refused = await resp.json()
            assert resp.status == 400, refused
        assert "audio: given 2 times" in refused["error"]["message"], refused
        assert not await counted(http, gw.url, "", status="5"), await metrics(http, gw.url)

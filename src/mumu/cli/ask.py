"""``mumu ask "question"`` / ``mumu ask --audio file.wav``: ask through a running gateway.

The transcript and the answer stream to the terminal as they arrive (over the
websocket, the same way the demo page does it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import aiohttp

from mumu.contracts.event_types import EventType
from mumu.gateway.transport import base_url, client_ssl
from mumu.settings import Settings

CHUNK = 256 * 1024


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("ask", help="ask a question (text or audio) through a gateway")
    p.add_argument("question", nargs="?", help="the question, as text")
    p.add_argument("--audio", type=Path, help="ask with this audio file instead")
    p.add_argument("--url", help="gateway base URL (default: from MUMU_GATEWAY__HOST/PORT)")
    p.add_argument("--session", help="continue this session id")
    p.add_argument("--json", action="store_true", help="print every event as a JSON line")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the answer")
    p.set_defaults(func=run)


async def _session(http: aiohttp.ClientSession, url: str, key: str, sid: str | None) -> Any:
    body = {"session_id": sid} if sid else None
    async with http.post(f"{url}/api/session", json=body,
                         headers={"Authorization": f"Bearer {key}"}) as resp:
        data = await resp.json()
        if resp.status != 200:
            raise RuntimeError(f"session refused ({resp.status}): {data['error']['message']}")
        return data


def _show(event: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(event), flush=True)
        return
    kind = event["type"]
    if kind == EventType.TRANSCRIPT_PARTIAL:
        print(f"… {event['segment']['text'].strip()}", file=sys.stderr, flush=True)
    elif kind == EventType.TRANSCRIPT_FINAL:
        print(f"you ({event['language']}): {event['text'].strip()}", file=sys.stderr, flush=True)
    elif kind == EventType.ANSWER_DELTA:
        if event.get("restart"):
            print("\n[the answer restarted]", file=sys.stderr)
        print(event["text"], end="", flush=True)
    elif kind == EventType.ANSWER_FINAL:
        print(flush=True)


async def ask(args: argparse.Namespace, settings: Settings) -> int:
    gw = settings.gateway
    key = gw.client_api_key
    if key is None:
        raise RuntimeError("set MUMU_GATEWAY__CLIENT_API_KEY to a workspace API key")
    url = (args.url or base_url(gw, gw.host, gw.port)).rstrip("/")
    tls = client_ssl(gw)
    connector = aiohttp.TCPConnector(ssl=tls) if tls is not None else None
    async with aiohttp.ClientSession(connector=connector) as http:
        session = await _session(http, url, key.get_secret_value(), args.session)
        ws_url = url.replace("http", "ws", 1) + "/api/ws?token=" + session["token"]
        async with http.ws_connect(ws_url, max_msg_size=0) as ws:
            if args.audio is not None:
                data = await asyncio.to_thread(args.audio.read_bytes)
                for start in range(0, len(data), CHUNK):
                    await ws.send_bytes(data[start:start + CHUNK])
                fmt = args.audio.suffix.lstrip(".").lower()
                await ws.send_json({"type": "audio.end", "format": fmt})
                print(f"sent {len(data)} bytes; transcribing…", file=sys.stderr, flush=True)
            else:
                await ws.send_json({"type": "ask", "text": args.question})
            request_id: str | None = None
            async with asyncio.timeout(args.timeout):
                async for msg in ws:
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        raise RuntimeError(f"the gateway closed the connection ({ws.close_code})")
                    event = json.loads(msg.data)
                    if event["type"] == "accepted" and request_id is None:
                        request_id = event["request_id"]
                        continue
                    mine = event.get("request_id") in (None, request_id)
                    if event["type"] == EventType.ERROR and mine:
                        print(f"error ({event.get('stage')}): {event['message']}",
                              file=sys.stderr)
                        return 1
                    if request_id is None or event.get("request_id") != request_id:
                        continue
                    _show(event, args.json)
                    if event["type"] == EventType.ANSWER_FINAL:
                        print(f"(session {session['session_id']})", file=sys.stderr)
                        return 0
    return 1


def run(args: argparse.Namespace, settings: Settings) -> int:
    if (args.question is None) == (args.audio is None):
        raise RuntimeError('give a question ("...") or --audio FILE, not both')
    try:
        return asyncio.run(ask(args, settings))
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise RuntimeError(f"could not reach the gateway: {exc!r}") from exc

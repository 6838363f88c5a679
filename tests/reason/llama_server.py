"""llama.cpp's OpenAI-compatible server for the tests, with a log of what it received.

This is the app ``python -m llama_cpp.server`` serves (``llama_cpp.server.app.create_app``
with the same settings classes), run by uvicorn as that module does, plus one ASGI
middleware that appends the JSON body of every POST to a JSON-lines file, so a test
can assert on the prompt the backend really received. Everything else is the
stock default, ``interrupt_requests`` included: a request arriving while another
streams cuts that stream short (``[DONE]`` without a finish reason), as it does
for anyone who runs ``python -m llama_cpp.server``.

    python -m tests.reason.llama_server --model X.gguf --port 8001 --log requests.jsonl
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import uvicorn
from llama_cpp.server.app import create_app
from llama_cpp.server.settings import ModelSettings, ServerSettings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


class RequestLog:
    """Appends ``{"path": ..., "body": ...}`` of every POST to ``path``."""

    def __init__(self, app: App, path: Path) -> None:
        self.app = app
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        body = bytearray()

        async def logged() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                body.extend(message.get("body", b""))
                if not message.get("more_body"):
                    with self.path.open("a") as f:
                        f.write(
                            json.dumps({"path": scope["path"], "body": json.loads(body)}) + "\n"
                        )
            return message

        await self.app(scope, logged, send)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--n_threads", type=int, default=1)
    parser.add_argument("--n_ctx", type=int, default=2048)
    args = parser.parse_args()
    server = ServerSettings(host="127.0.0.1", port=args.port)
    model = ModelSettings(
        model=args.model,
        model_alias="smollm2",
        n_threads=args.n_threads,
        n_threads_batch=args.n_threads,  # as mumu's embedded backend: no spare spinning threads
        n_ctx=args.n_ctx,
        verbose=False,
    )
    app = create_app(server_settings=server, model_settings=[model])
    uvicorn.run(RequestLog(app, args.log), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()

"""An OpenAI-compatible chat server that answers by echoing the question, one token per
``--token-seconds`` (a small model's decode pace), at most the request's ``max_tokens``:
the reason stage's ``openai`` backend talks to it as to vLLM or llama.cpp's server, so the
chaos run pays for the pipeline and not for a language model. Run as
``python -m tests.chaos.echo_llm --port N``."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time

from aiohttp import web


def _chunk(text: str | None, finish: str | None = None,
           usage: dict[str, int] | None = None) -> bytes:
    choice = {"index": 0, "delta": {"content": text} if text is not None else {},
              "finish_reason": finish}
    event: dict[str, object] = {"id": "echo", "object": "chat.completion.chunk",
                                "created": int(time.time()), "model": "echo",
                                "choices": [choice] if usage is None else []}
    if usage is not None:
        event["usage"] = usage
    return b"data: " + json.dumps(event).encode() + b"\n\n"


def app(token_seconds: float) -> web.Application:
    async def completions(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        question = str(body["messages"][-1]["content"])
        limit = int(body.get("max_tokens") or 16)
        words = itertools.islice(itertools.cycle(f"You asked: {question}".split()), limit)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        sent = 0
        for i, word in enumerate(words):
            await asyncio.sleep(token_seconds)
            await resp.write(_chunk(word if i == 0 else f" {word}"))
            sent += 1
        await resp.write(_chunk(None, "length" if sent >= limit else "stop"))
        await resp.write(_chunk(None, usage={"prompt_tokens": len(question.split()),
                                             "completion_tokens": sent}))
        await resp.write(b"data: [DONE]\n\n")
        return resp

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "echo"}]})

    application = web.Application()
    application.router.add_post("/v1/chat/completions", completions)
    application.router.add_get("/v1/models", models)
    return application


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token-seconds", type=float, default=0.01)
    args = parser.parse_args()
    web.run_app(app(args.token_seconds), host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()

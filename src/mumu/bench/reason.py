"""Reason stage: time to first answer delta at a client vs first token from the backend directly.

Same run, same server, same prompt. One request at a time, alternating which path
goes first:

* direct: the chat completion posted straight to the OpenAI-compatible server
  (``stream: true``), timed from the request to the first content chunk;
* mumu: a ``TextAsk`` published on ``mumu.ingest.text.<ws>`` (JetStream, PubAck
  awaited) and the reason stage on the ``openai`` backend in front of the same
  server, timed from the publish to the first ``mumu.answer.delta.<ws>`` a core
  subscriber receives.

The overhead of each pair is mumu minus direct; its median must stay within the
floor of issue 5 (15 ms). Without ``--base-url`` the benchmark starts
``python -m llama_cpp.server`` with the default GGUF (SmolLM2-135M-Instruct Q4_1).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

from mumu.bench.results import write_result
from mumu.broker.embedded import EmbeddedNats
from mumu.broker.streams import apply_all
from mumu.broker.workspaces import ensure_workspace
from mumu.contracts import headers as h
from mumu.contracts import subjects
from mumu.contracts.events import AnswerDelta, AnswerFinal, TextAsk, new_id
from mumu.runtime.process import run_stage
from mumu.settings import NatsSettings, Settings, StageRuntimeSettings
from mumu.stages.reason.llama_backend import default_model_path
from mumu.stages.reason.prompt import system_message
from mumu.stages.reason.settings import OpenAIBackendSettings
from mumu.stages.reason.stage import ReasonStage, build_backend

WS = "bench"
QUESTION = "What is the capital of France?"
FLOOR_OVERHEAD_P50_MS = 15.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--requests", type=int, default=60, help="measured pairs")
    parser.add_argument("--warmup", type=int, default=5, help="pairs run before measuring")
    parser.add_argument("--max-tokens", type=int, default=16, help="tokens per answer")
    parser.add_argument(
        "--base-url",
        default=None,
        help="an OpenAI-compatible server to measure (default: start llama_cpp.server)",
    )
    parser.add_argument("--model", default="smollm2", help="model name sent to --base-url")
    parser.add_argument("--threads", type=int, default=1, help="threads of the started server")


def run(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    return asyncio.run(_run(args))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def _llama_server(threads: int, workdir: Path) -> AsyncIterator[str]:
    """``python -m llama_cpp.server`` with the default GGUF on a free port."""
    port = _free_port()
    with (workdir / "llama-server.log").open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(default_model_path()),
            "--model_alias",
            "smollm2",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_threads",
            str(threads),
            "--n_threads_batch",  # as the embedded backend sets it: the same work either side
            str(threads),
            "--n_ctx",
            "2048",
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        async with aiohttp.ClientSession() as session, asyncio.timeout(60):
            while True:
                if proc.returncode is not None:
                    raise RuntimeError(f"llama_cpp.server exited; see {workdir}/llama-server.log")
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{url}/models") as resp:
                        if resp.status == 200:
                            break
                await asyncio.sleep(0.1)
        yield url
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()


async def _direct(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> float:
    """Seconds from the request to the first content chunk; reads the stream to its end."""
    t0 = time.perf_counter()
    first: float | None = None
    async with session.post(f"{url}/chat/completions", json=body) as resp:
        resp.raise_for_status()
        async for line in resp.content:
            if first is None and line.startswith(b"data:") and b'"content"' in line:
                first = time.perf_counter() - t0
    if first is None:
        raise RuntimeError("the backend streamed no content")
    return first


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]

    return {
        "p50": round(1000 * statistics.median(ordered), 2),
        "p90": round(1000 * pct(0.9), 2),
        "mean": round(1000 * statistics.fmean(ordered), 2),
        "min": round(1000 * ordered[0], 2),
        "max": round(1000 * ordered[-1], 2),
    }


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mumu-bench-reason-") as tmp:
        workdir = Path(tmp)
        async with contextlib.AsyncExitStack() as stack:
            if args.base_url:
                url, model = args.base_url.rstrip("/"), args.model
            else:
                url = await stack.enter_async_context(_llama_server(args.threads, workdir))
                model = "smollm2"
            server = await stack.enter_async_context(EmbeddedNats(workdir / "nats"))
            result = await _measure(args, server.url, url, model)
    result["backend"] = args.base_url or f"llama_cpp.server ({default_model_path().name})"
    write_result("reason", result)
    return result


class _Client:
    """Asks through mumu and notes when the first delta and the final of each ask arrive."""

    def __init__(self, nc: Client) -> None:
        self.js = nc.jetstream()
        self.first_delta: dict[str, asyncio.Future[float]] = {}
        self.final: dict[str, asyncio.Future[None]] = {}

    async def on_msg(self, msg: Msg) -> None:
        now = time.perf_counter()
        if subjects.ANSWER_DELTA.matches(msg.subject):
            rid = AnswerDelta.model_validate_json(msg.data).request_id
            fut = self.first_delta.get(rid)
            if fut is not None and not fut.done():
                fut.set_result(now)
        elif subjects.ANSWER_FINAL.matches(msg.subject):
            rid = AnswerFinal.model_validate_json(msg.data).request_id
            done = self.final.get(rid)
            if done is not None and not done.done():
                done.set_result(None)

    async def ask(self) -> float:
        """Seconds from publishing the ask to its first delta (waits for the final too)."""
        loop = asyncio.get_running_loop()
        rid = new_id()
        ask = TextAsk(event_id=rid, request_id=rid, workspace_id=WS, session_id=rid, text=QUESTION)
        self.first_delta[rid], self.final[rid] = loop.create_future(), loop.create_future()
        t0 = time.perf_counter()
        await self.js.publish(
            subjects.INGEST_TEXT.for_workspace(WS),
            ask.model_dump_json().encode(),
            headers={h.MSG_ID: rid},
        )
        try:
            arrived = await asyncio.wait_for(self.first_delta[rid], 30)
            await asyncio.wait_for(self.final[rid], 30)
        finally:
            del self.first_delta[rid], self.final[rid]
        return arrived - t0


async def _measure(args: argparse.Namespace, nats_url: str, url: str, model: str) -> dict[str, Any]:
    settings = Settings(
        nats=NatsSettings(url=nats_url),
        log_level="WARNING",
        stage=StageRuntimeSettings(concurrency=4, batch=4, fetch_timeout=1.0),
    )
    reason = settings.reason.model_copy(
        update={
            "backend": "openai",
            "max_tokens": args.max_tokens,
            "temperature": 0.0,
            "openai": OpenAIBackendSettings(base_url=url, model=model),
        }
    )
    body = {
        "model": model,
        "max_tokens": args.max_tokens,
        "temperature": 0.0,
        "stream": True,
        "messages": [
            system_message(reason.system_prompt, None).as_dict(),
            {"role": "user", "content": QUESTION},
        ],
    }
    nc = await nats.connect(nats_url)
    await apply_all(nc)
    await ensure_workspace(nc, WS)
    client = _Client(nc)
    for pattern in (subjects.ANSWER_DELTA, subjects.ANSWER_FINAL):
        await nc.subscribe(pattern.wildcard, cb=client.on_msg)
    stop, started = asyncio.Event(), asyncio.Event()
    stage = asyncio.create_task(
        run_stage(
            ReasonStage(reason, build_backend(reason)),
            settings.model_copy(update={"reason": reason}),
            stop,
            started=started,
        )
    )
    direct: list[float] = []
    mumu: list[float] = []
    try:
        await asyncio.wait_for(started.wait(), 60)
        async with aiohttp.ClientSession() as session:
            for i in range(args.warmup + args.requests):
                if i % 2 == 0:  # alternate which path goes first
                    d = await _direct(session, url, body)
                    m = await client.ask()
                else:
                    m = await client.ask()
                    d = await _direct(session, url, body)
                if i >= args.warmup:
                    direct.append(d)
                    mumu.append(m)
    finally:
        stop.set()
        await stage
        await nc.drain()
    return _report(args, direct, mumu)


def _report(args: argparse.Namespace, direct: list[float], mumu: list[float]) -> dict[str, Any]:
    overhead = [m - d for m, d in zip(mumu, direct, strict=True)]
    overhead_p50 = statistics.median(overhead) * 1000
    return {
        "requests": len(direct),
        "max_tokens": args.max_tokens,
        "prompt": QUESTION,
        "direct_first_token_ms": _summary(direct),
        "mumu_first_delta_ms": _summary(mumu),
        "overhead_ms": {"p50": round(overhead_p50, 2), "p90": _summary(overhead)["p90"]},
        "ratio_p50": round(statistics.median(mumu) / statistics.median(direct), 3),
        "floor": f"overhead p50 <= {FLOOR_OVERHEAD_P50_MS} ms",
        "met": overhead_p50 <= FLOOR_OVERHEAD_P50_MS,
    }

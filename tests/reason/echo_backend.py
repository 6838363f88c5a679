"""A test-only LLM backend: what a new backend implements, and nothing else."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from mumu.runtime import RetryPolicy
from mumu.stages.reason.backend import BackendUnavailableError, ChatRequest, estimate_tokens


class NoServerBackend:
    """What a test backend without a server of its own has in common: nothing to start or
    close, tokens estimated; subclasses give ``model``, ``concurrency``, ``retry`` and
    ``stream``."""

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def count_tokens(self, texts: list[str]) -> list[int]:
        return [estimate_tokens(t) for t in texts]


class EchoBackend(NoServerBackend):
    """A test-only LLM backend: answers ``You asked: <question>`` word by word; the first
    request it ever gets fails as a busy server would (retryable)."""

    model = "echo"
    concurrency = 1
    retry = RetryPolicy(in_place=1, first_delay=0.05)

    def __init__(self) -> None:
        self.calls = 0

    async def stream(self, request: ChatRequest) -> AsyncGenerator[str, None]:
        self.calls += 1
        if self.calls == 1:
            raise BackendUnavailableError("busy", retry_after=0.1)
        words = f"You asked: {request.messages[-1].content}".split(" ")
        for i, word in enumerate(words):
            await asyncio.sleep(0)
            request.completion_tokens += 1
            yield word if i == 0 else f" {word}"
        request.finish_reason = "stop"

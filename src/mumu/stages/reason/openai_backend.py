"""``openai`` backend: any OpenAI-compatible ``/v1/chat/completions`` with ``stream: true``.

A stream counts as finished only when the server sent a finish reason. llama.cpp's
Python server (``python -m llama_cpp.server``, ``interrupt_requests`` on by default)
ends a running stream with ``[DONE]`` and no finish reason as soon as another
request arrives: that is an interruption, never a complete answer. When it
happens while this process has another stream open, the backend sends one
request at a time from then on (after letting the streams already open finish),
so concurrent requests stop cutting each other short.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp

from mumu.logs import redacted
from mumu.runtime import RetryPolicy
from mumu.stages.reason.backend import (
    BackendInterruptedError,
    BackendUnavailableError,
    ChatRequest,
    estimate_tokens,
)
from mumu.stages.reason.settings import OpenAIBackendSettings

log = logging.getLogger(__name__)
STAGE = "reason"

RETRY_STATUSES = frozenset({408, 409, 425, 429})


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds: a number, or an HTTP date."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


class OpenAIBackend:
    """Streams chat completions over aiohttp. Refused connections, 429 and 5xx are raised as
    retryable (with the server's ``Retry-After``): the runtime retries them in place
    (``retry``), then naks."""

    concurrency: int | None = None  # an HTTP server batches: the runtime's concurrency

    def __init__(self, settings: OpenAIBackendSettings) -> None:
        self._settings = settings
        self.retry = RetryPolicy(
            in_place=settings.retries, first_delay=settings.retry_backoff,
            max_delay=settings.max_retry_after,
        )
        self._url = settings.base_url.rstrip("/") + "/chat/completions"
        self._shown = redacted(self._url)
        """The URL as errors and logs name it (without a password it may carry)."""
        self._session: aiohttp.ClientSession | None = None
        self._one_at_a_time: asyncio.Lock | None = None
        self._free_streams = 0  # open streams started before one-at-a-time began
        self._no_free_streams = asyncio.Event()
        self._no_free_streams.set()

    @property
    def model(self) -> str:
        return self._settings.model

    async def start(self) -> None:
        s = self._settings
        headers = {"Accept": "text/event-stream"}
        if s.api_key is not None:
            headers["Authorization"] = f"Bearer {s.api_key.get_secret_value()}"
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=s.connect_timeout,
            sock_connect=s.connect_timeout,
            sock_read=s.read_timeout,
        )
        self._session = aiohttp.ClientSession(headers=headers, timeout=timeout)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def count_tokens(self, texts: list[str]) -> list[int]:
        return [estimate_tokens(text) for text in texts]

    def _body(self, request: ChatRequest) -> dict[str, Any]:
        return {
            "model": self._settings.model,
            "messages": [m.as_dict() for m in request.messages],
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "stream": True,
            "stream_options": {"include_usage": True},
        }

    async def stream(self, request: ChatRequest) -> AsyncGenerator[str, None]:
        if self._session is None:
            raise RuntimeError("OpenAIBackend.start() was not called")
        lock = self._one_at_a_time
        if lock is not None:
            await lock.acquire()
        else:
            self._free_streams += 1
            self._no_free_streams.clear()
        try:
            if lock is not None:  # let the streams started before finish, not cut them
                await self._no_free_streams.wait()
            async with contextlib.aclosing(self._attempt(self._session, request)) as chunks:
                async for chunk in chunks:
                    yield chunk
        except BackendInterruptedError as exc:
            # before one-at-a-time every open stream is a free one
            if exc.cut_short and self._free_streams > 1 and self._one_at_a_time is None:
                log.warning(
                    "backend %s cut a stream short while another was open (llama.cpp "
                    "server's interrupt_requests?): sending one request at a time from now "
                    "on; start that server with --interrupt_requests False",
                    self._shown,
                    extra={"stage": STAGE, "request_id": request.request_id},
                )
                self._one_at_a_time = asyncio.Lock()
            raise
        finally:
            if lock is not None:
                lock.release()
            else:
                self._free_streams -= 1
                if not self._free_streams:
                    self._no_free_streams.set()

    async def _attempt(
        self, session: aiohttp.ClientSession, request: ChatRequest
    ) -> AsyncGenerator[str, None]:
        """One request; a failure is raised for the runtime to retry (``self.retry``)."""
        try:
            async with session.post(self._url, json=self._body(request)) as resp:
                await self._check_status(resp)
                async for chunk in self._read_events(resp, request):
                    yield chunk
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            if request.completion_tokens:
                raise BackendInterruptedError(f"stream from {self._shown} broke: {exc!r}") from exc
            raise BackendUnavailableError(f"cannot reach {self._shown}: {exc!r}") from exc

    async def _check_status(self, resp: aiohttp.ClientResponse) -> None:
        if resp.status < 400:
            return
        detail = (await resp.text())[:300]
        message = f"{self._shown} answered {resp.status}: {detail}"
        if resp.status in RETRY_STATUSES or resp.status >= 500:
            retry_after = retry_after_seconds(resp.headers.get("Retry-After"))
            raise BackendUnavailableError(message, retry_after=retry_after)
        raise BackendUnavailableError(message, retryable=False)

    async def _read_events(
        self, resp: aiohttp.ClientResponse, request: ChatRequest
    ) -> AsyncIterator[str]:
        """Server-sent events ``data: {...}`` until ``[DONE]``; complete with a finish reason.

        Only ``data:`` lines count as progress: a server that keeps the connection up
        with pings but sends no data for ``read_timeout`` seconds has stalled.
        """
        loop = asyncio.get_running_loop()
        idle = self._settings.read_timeout
        deadline = loop.time() + idle
        done = False
        try:
            while raw := await self._line(resp, deadline):
                line = raw.strip()
                if not line.startswith(b"data:"):
                    continue
                deadline = loop.time() + idle
                data = line[5:].strip()
                if data == b"[DONE]":
                    done = True
                    break
                event = json.loads(data)
                if "error" in event:
                    raise BackendInterruptedError(f"{self._shown} sent an error: {event['error']}")
                text = self._take(event, request)
                if text:
                    request.completion_tokens += 1
                    yield text
        except aiohttp.ClientPayloadError as exc:
            raise BackendInterruptedError(f"stream from {self._shown} broke: {exc!r}") from exc
        except TimeoutError as exc:
            raise BackendInterruptedError(
                f"stream from {self._shown} stalled: no data for {idle:g}s"
            ) from exc
        except json.JSONDecodeError as exc:
            raise BackendInterruptedError(f"{self._shown} sent a malformed chunk: {exc}") from exc
        if request.finish_reason is None:
            how = "[DONE] without a finish reason" if done else "the end of the stream"
            raise BackendInterruptedError(
                f"stream from {self._shown} was cut short ({how}) after "
                f"{request.completion_tokens} chunks",
                cut_short=done,
            )
        if not request.prompt_tokens:
            counted = await self.count_tokens([m.content for m in request.messages])
            request.prompt_tokens = sum(counted)

    async def _line(self, resp: aiohttp.ClientResponse, deadline: float) -> bytes:
        """The next line (b"" at the end); ``TimeoutError`` once ``deadline`` passes."""
        async with asyncio.timeout_at(deadline):
            return await resp.content.readline()

    @staticmethod
    def _take(event: dict[str, Any], request: ChatRequest) -> str:
        usage = event.get("usage")
        if isinstance(usage, dict):
            request.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            request.completion_tokens = int(usage.get("completion_tokens") or 0)
        choices = event.get("choices") or []
        if not choices:
            return ""
        choice = choices[0]
        if choice.get("finish_reason"):
            request.finish_reason = str(choice["finish_reason"])
        content = (choice.get("delta") or {}).get("content")
        return content if isinstance(content, str) else ""

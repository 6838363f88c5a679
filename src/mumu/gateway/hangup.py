"""A request that waits for its result (``?wait=true``, the OpenAI routes) stops waiting
as soon as its client hangs up, and gives its waiting place (``gateway.admission``) back
then, not at ``wait_timeout``. The request itself goes on through the pipeline; its
results stay readable (resume, ``GET /api/sessions/...``).

aiohttp does not cancel a handler whose client disconnected (``handler_cancellation``
stays off, so no handler is cut in the middle of a publish); a waiting handler looks at
its connection instead, every ``POLL`` seconds."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiohttp import web

from mumu.gateway.errors import ApiError

log = logging.getLogger("mumu.gateway.hangup")

T = TypeVar("T")
Connected = Callable[[], bool]
POLL = 0.5
"""Seconds between looks at a waiting client's connection."""


class ClientGoneError(ApiError):
    """The client closed its connection while its request waited (nginx's 499: no one
    reads the answer)."""

    def __init__(self, request_id: str | None) -> None:
        super().__init__(499, "client_closed_request",
                         "the client closed the connection before the result",
                         request_id=request_id)


def connection_of(request: web.Request) -> Connected:
    """Whether ``request``'s client is still connected."""

    def connected() -> bool:
        transport = request.transport
        return transport is not None and not transport.is_closing()

    return connected


def always() -> bool:
    """A caller without a connection to watch."""
    return True


async def within(awaitable: Awaitable[T], seconds: float, connected: Connected,
                 request_id: str | None = None) -> T:
    """``awaitable``'s result. ``TimeoutError`` after ``seconds``; ``ClientGoneError`` once
    ``connected`` says the client left. ``awaitable`` is cancelled either way."""
    task = asyncio.ensure_future(awaitable)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    try:
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError
            done, _ = await asyncio.wait({task}, timeout=min(left, POLL))
            if done:
                return task.result()
            if not connected():
                log.info("request %s: the client hung up; no longer waiting for its result "
                         "(the request goes on)", request_id)
                raise ClientGoneError(request_id)
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

"""The narrow interface every language-model backend implements.

A backend turns a chat (system, earlier turns, the question) into an ``async``
iterator of text chunks. It raises ``BackendUnavailableError`` when it cannot be
reached or fails, and ``BackendInterruptedError`` when a stream stops before the model
finished: the stage then retries the whole request from the start. A backend never
retries by itself: it declares how many requests it takes at once (``concurrency``) and
how the runtime may retry a failed one in place (``retry``), and the stage hands both to
its routes, so adding a backend changes nothing in the stage.
"""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Literal, Protocol

from mumu.runtime import RetryPolicy

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Role
    content: str

    def as_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(slots=True)
class ChatRequest:
    """One generation. The backend fills ``prompt_tokens``/``completion_tokens`` as it goes."""

    messages: list[ChatMessage]
    max_tokens: int
    temperature: float
    request_id: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = field(default=None)


class BackendError(Exception):
    """Base of backend failures; ``retry_after`` is a server's hint in seconds;
    ``retryable``: the same request may succeed if sent again right away (a refused
    connection, 429, 5xx), so the runtime may retry it in place."""

    def __init__(
        self, message: str, *, retry_after: float | None = None, retryable: bool = True
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.retryable = retryable


class BackendUnavailableError(BackendError):
    """The backend cannot be reached or answered with an error."""


class BackendInterruptedError(BackendError):
    """The stream stopped before the model finished (the server died or cut it short).

    ``cut_short``: the server closed the stream itself (``[DONE]``) without a finish
    reason, as llama.cpp's server does to a stream when another request arrives.
    Retried by redelivery (a restart the client sees), never in place.
    """

    def __init__(
        self, message: str, *, retry_after: float | None = None, cut_short: bool = False
    ) -> None:
        super().__init__(message, retry_after=retry_after, retryable=False)
        self.cut_short = cut_short


class Backend(Protocol):
    """A language model behind one call: ``stream``."""

    @property
    def model(self) -> str:
        """The model name reported in ``AnswerFinal.model``."""
        ...

    @property
    def concurrency(self) -> int | None:
        """Requests one stage process sends at once per route (``None``: the runtime's
        ``MUMU_STAGE__CONCURRENCY``); the rest wait on the durable consumer for other
        replicas."""
        ...

    @property
    def retry(self) -> RetryPolicy:
        """How the runtime retries a request that failed before any delta, in place."""
        ...

    async def start(self) -> None:
        """Open connections or load the model (before the stage is ready)."""
        ...

    async def close(self) -> None: ...

    async def count_tokens(self, texts: list[str]) -> list[int]:
        """Tokens each of ``texts`` takes as a chat message (exact, or an estimate)."""
        ...

    def stream(self, request: ChatRequest) -> AsyncGenerator[str, None]:
        """Text chunks of the answer, as the model produces them."""
        ...


def estimate_tokens(text: str) -> int:
    """An estimate (UTF-8 bytes / 3, plus 4 for the message's role markers), not a bound.

    BPE tokenizers average about 4 bytes per token on English and most Latin-script
    text, so this over-counts there; on digit-heavy text, code or CJK scripts (3 bytes
    per character, often a token each) it can under-count.
    """
    return math.ceil(len(text.encode()) / 3) + 4

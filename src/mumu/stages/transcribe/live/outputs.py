"""A live stream's updates as events, and barge-in.

Event ids depend only on the stream's content: a replay after a takeover publishes the same
ids, which JetStream deduplicates.

Barge-in: the first words of utterance n (its first partial with text, or its final when
it had none) cancel the answer to utterance n-1 with a ``CancelRequest`` on
``mumu.control.cancel.<ws>``, the path a client's cancel takes, so whichever reason replica
streams that answer stops it (``AnswerFinal.cancelled``), and one not started yet ends at
once as cancelled. Words, not the VAD's first speech: a cough or a door is speech to the
VAD for a moment but decodes to no text, and must not cut the answer off. The first
partial comes one decode step (``step``) into the new utterance, seconds before its final.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

from mumu.contracts import subjects
from mumu.contracts.events import (
    CancelRequest,
    ErrorCode,
    LiveEnded,
    LiveStart,
    Segment,
    TranscriptFinal,
    TranscriptPartial,
    Word,
    derive_id,
)
from mumu.contracts.ids import is_id
from mumu.runtime import Inbound, Outbound
from mumu.stages.transcribe.live.decoder import LiveDecoder
from mumu.stages.transcribe.live.stream import Final, Partial, Update

NAME = "transcribe"


def utterance_request_id(stream_request_id: str, utterance: int) -> str:
    """The request id of one utterance of a stream (an id of its own for reason, persist
    and the client)."""
    candidate = f"{stream_request_id}-{utterance}"
    if is_id(candidate):
        return candidate
    return derive_id("", stream_request_id, NAME, "utterance", utterance)


class Outputs:
    def __init__(self, inbound: Inbound[LiveStart], started: LiveStart, decoder: LiveDecoder,
                 model: str, *, barge_in: bool,
                 on_final: Callable[[Final], None] | None = None) -> None:
        self.inbound = inbound
        self.started = started
        self.decoder = decoder
        self.model = model
        self.barge_in = barge_in
        self.on_final = on_final
        self.ws = inbound.workspace_id
        self._partials = 0
        self._spoken = -1
        """The last utterance that had words (its previous answer is cancelled)."""
        self.ended = False
        """The stream's ``LiveEnded`` is out."""

    async def publish(self, updates: Sequence[Update]) -> None:
        for update in updates:
            if isinstance(update, Partial):
                if update.committed or update.tentative:
                    await self._words_of(update.utterance)
                await self.inbound.emit(Outbound.of(
                    subjects.TRANSCRIPT_PARTIAL.for_workspace(self.ws), self._partial(update)))
            elif isinstance(update, Final):
                if update.text:
                    await self._words_of(update.utterance)
                if self.on_final is not None:  # (counted as made: before anyone sees it)
                    self.on_final(update)
                await self.inbound.emit(Outbound.of(
                    subjects.TRANSCRIPT_FINAL.for_workspace(self.ws), self._final(update)))

    async def end(self, reason: Literal["end"] | ErrorCode, utterances: int, seconds: float
                  ) -> None:
        """The stream is over (after its last final): its one ``LiveEnded``. The id is the
        stream's, and it is published ``once`` (a record in ``mumu-once-<ws>``), so a replica
        that replays the stream after a takeover never publishes a second one."""
        if self.ended:
            return
        s = self.started
        marker = LiveEnded(
            event_id=derive_id(self.ws, s.request_id, NAME, "live-ended"),
            request_id=s.request_id, workspace_id=self.ws, session_id=s.session_id,
            stream_id=s.stream_id, utterances=utterances, seconds=round(seconds, 3),
            reason=reason)
        await self.inbound.emit(Outbound.of(
            subjects.STREAM_ENDED.for_workspace(self.ws), marker, once=True))
        self.ended = True

    async def _words_of(self, utterance: int) -> None:
        """Utterance ``utterance`` has words: barge in on the previous one's answer."""
        if utterance <= self._spoken:
            return
        self._spoken = utterance
        if not self.barge_in or utterance == 0:
            return
        s = self.started
        previous = utterance_request_id(s.request_id, utterance - 1)
        cancel = CancelRequest(
            event_id=derive_id(self.ws, previous, NAME, "barge-in"), request_id=previous,
            workspace_id=self.ws, session_id=s.session_id,
        )
        await self.inbound.emit(Outbound.of(
            subjects.CONTROL_CANCEL.for_workspace(self.ws), cancel))

    def _partial(self, p: Partial) -> TranscriptPartial:
        self._partials += 1
        s = self.started
        rid = utterance_request_id(s.request_id, p.utterance)
        text = f"{p.committed} {p.tentative}".strip()
        return TranscriptPartial(
            event_id=derive_id(self.ws, rid, NAME, "live-partial", self._partials),
            request_id=rid, workspace_id=self.ws, session_id=s.session_id,
            segment=Segment(id=p.utterance, start=round(p.start, 3), end=round(p.end, 3),
                            text=text),
            language=self.decoder.language, committed=p.committed, tentative=p.tentative,
            stream_id=s.stream_id, utterance=p.utterance,
        )

    def _final(self, f: Final) -> TranscriptFinal:
        s = self.started
        rid = utterance_request_id(s.request_id, f.utterance)
        words = [Word(start=round(w.start, 3), end=round(w.end, 3), word=w.text,
                      probability=round(w.probability, 4)) for w in f.words]
        segment = Segment(id=0, start=round(f.start, 3), end=round(f.end, 3), text=f.text,
                          words=words if s.options.word_timestamps else None)
        return TranscriptFinal(
            event_id=derive_id(self.ws, rid, NAME, "final"), request_id=rid,
            workspace_id=self.ws, session_id=s.session_id, text=f.text,
            segments=[segment] if f.text else [], language=self.decoder.language or "en",
            language_probability=1.0, duration=round(f.end - f.start, 3), model=self.model,
            compute_seconds=round(self.decoder.take_compute_seconds(), 3),
            task=s.options.task, answer=s.options.answer, stream_id=s.stream_id,
            utterance=f.utterance,
        )

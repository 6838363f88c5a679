"""A Realtime session's items, from the results of its live streams.

``server_vad``: each utterance of a stream is an item, completed at its final.
``turn_detection: null``: each stream (from the first append to the commit) is one item,
its utterances joined, committed at the commit and completed at the stream's
``stream.ended`` (the transcribe stage's ``LiveEnded``, published once after the stream's
last final, also when it had none). ``SAFETY`` is only for a stage that is gone: a stream
that ended here and got no result at all for that long completes with what arrived.
"""

from __future__ import annotations

import asyncio
import collections
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mumu.contracts.event_types import EventType
from mumu.gateway.hub import ResultEvent
from mumu.gateway.live import LiveOut
from mumu.gateway.realtime_events import ItemText, error_event, server_event

DELTA = "conversation.item.input_audio_transcription.delta"
COMPLETED = "conversation.item.input_audio_transcription.completed"
SAFETY = 120.0
"""Seconds without any result of a stream that ended here before its items complete
anyway: no transcribe replica is left to end it (a live one, however far behind, ends every
stream with ``stream.ended``)."""
ENDED_KEPT = 16
"""Request ids of streams that are over, kept to match the errors published after their
``stream.ended`` (a stream the stage ended for a reason: the error follows the marker)."""


@dataclass
class _Item:
    id: str = field(default_factory=lambda: f"item_{uuid.uuid4().hex[:20]}")
    text: ItemText = field(default_factory=ItemText)
    started: bool = False
    committed: bool = False
    completed: bool = False
    seconds: float = 0.0


@dataclass
class _Stream:
    request_id: str
    manual: bool
    items: dict[int, _Item] = field(default_factory=dict)
    ended: bool = False
    timer: asyncio.TimerHandle | None = None


class Items:
    def __init__(self, send: Callable[[dict[str, Any]], None], safety: float = SAFETY
                 ) -> None:
        self.send = send
        self.safety = safety
        self._streams: dict[str, _Stream] = {}
        self._over: collections.deque[str] = collections.deque(maxlen=ENDED_KEPT)
        self._previous: str | None = None

    def stream_started(self, out: LiveOut, *, manual: bool) -> None:
        self._streams[out.stream_id] = _Stream(out.request_id, manual)

    def stream_ended(self, out: LiveOut) -> None:
        """The audio ended here (commit, clear, timeout); the stage's ``stream.ended``
        completes what is open."""
        stream = self._streams.get(out.stream_id)
        if stream is None:
            return
        stream.ended = True
        if stream.manual:
            self._commit(self._item(stream, 0))
        self._arm(out.stream_id, stream)

    def forget(self, stream_id: str) -> None:
        """``input_audio_buffer.clear``: the stream's results are not shown."""
        stream = self._streams.pop(stream_id, None)
        if stream is not None and stream.timer is not None:
            stream.timer.cancel()

    def close(self) -> None:
        for stream_id in list(self._streams):
            self.forget(stream_id)

    def _item(self, stream: _Stream, utterance: int) -> _Item:
        key = 0 if stream.manual else utterance
        if key not in stream.items:
            stream.items[key] = _Item()
        return stream.items[key]

    def _arm(self, stream_id: str, stream: _Stream) -> None:
        if stream.timer is not None:
            stream.timer.cancel()
        loop = asyncio.get_running_loop()
        stream.timer = loop.call_later(self.safety, self._complete_stream, stream_id)

    def _complete_stream(self, stream_id: str) -> None:
        stream = self._streams.pop(stream_id, None)
        if stream is None:
            return
        if stream.timer is not None:
            stream.timer.cancel()
        self._over.append(stream.request_id)
        if stream.manual:  # its one item, also when the end beat the commit's bookkeeping
            self._item(stream, 0)
        for item in stream.items.values():
            self._complete(item)

    def on_result(self, event: ResultEvent) -> None:
        body = event.body
        stream_id = body.get("stream_id")
        stream = self._streams.get(stream_id) if isinstance(stream_id, str) else None
        if event.type is EventType.ERROR:
            self._error(body)
            return
        if stream is None or stream_id is None:
            return
        if event.type is EventType.STREAM_ENDED:  # every final of it is out
            self._complete_stream(stream_id)
            return
        utterance = int(body.get("utterance") or 0)
        item = self._item(stream, utterance)
        if event.type is EventType.TRANSCRIPT_PARTIAL:
            start = float((body.get("segment") or {}).get("start") or 0.0)
            self._started(item, start)
            self._delta(item, item.text.delta(str(body.get("committed") or "")))
        elif event.type is EventType.TRANSCRIPT_FINAL:
            segments = body.get("segments") or []
            end = float(segments[-1]["end"]) if segments else None
            self._started(item, float(segments[0]["start"]) if segments else 0.0)
            item.seconds += float(body.get("duration") or 0.0)
            self._delta(item, item.text.finish(str(body.get("text") or "")))
            if not stream.manual:
                self.send(server_event("input_audio_buffer.speech_stopped", item_id=item.id,
                                       audio_end_ms=round((end or 0.0) * 1000)))
                self._commit(item)
                self._complete(item)
                del stream.items[utterance]
        if stream.ended:  # the stage is alive: wait for its stream.ended
            self._arm(stream_id, stream)

    def _started(self, item: _Item, start: float) -> None:
        if not item.started:
            item.started = True
            self.send(server_event("input_audio_buffer.speech_started", item_id=item.id,
                                   audio_start_ms=round(start * 1000)))

    def _delta(self, item: _Item, delta: str) -> None:
        if delta:
            self.send(server_event(DELTA, item_id=item.id, content_index=0, delta=delta))

    def _commit(self, item: _Item) -> None:
        if not item.committed:
            item.committed = True
            self.send(server_event("input_audio_buffer.committed", item_id=item.id,
                                   previous_item_id=self._previous))
            self._previous = item.id

    def _complete(self, item: _Item) -> None:
        if not item.completed:
            item.completed = True
            self._commit(item)
            self.send(server_event(COMPLETED, item_id=item.id, content_index=0,
                                   transcript=item.text.delivered,
                                   usage={"type": "duration", "seconds": round(item.seconds, 3)}))

    def _error(self, body: dict[str, Any]) -> None:
        request_id = str(body.get("request_id") or "")
        streams = [*(s.request_id for s in self._streams.values()), *self._over]
        ours = any(request_id == r or request_id.startswith(f"{r}-") for r in streams)
        if ours:
            self.send(error_event(str(body.get("code") or "internal"),
                                  f"{body.get('stage', 'pipeline')}: {body.get('message', '')}"))

"""The audio one websocket receives before ``audio.end``.

While it holds audio the socket holds one of the gateway's audio places
(``MUMU_GATEWAY__MAX_AUDIO_BUFFERS``, per workspace and in total), so the audio all
sockets buffer is at most ``max_audio_buffers x max_ws_audio_bytes``.
"""

from __future__ import annotations

from mumu.gateway.admission import Slots
from mumu.gateway.errors import ApiError


class AudioBuffer:
    def __init__(self, places: Slots, workspace_id: str, limit: int) -> None:
        self._places = places
        self._workspace_id = workspace_id
        self._limit = limit
        self._data = bytearray()
        self._holding = False
        self._refused = False
        """This upload was refused (told once); its frames are dropped until audio.end."""

    def add(self, data: bytes) -> ApiError | None:
        """Buffer ``data``; an error to tell the client (once per refused upload)."""
        if self._refused:
            return None
        if not self._holding:
            try:
                self._places.enter(self._workspace_id)
            except ApiError as exc:
                self._refused = True
                return exc
            self._holding = True
        if len(self._data) + len(data) > self._limit:
            self.release()
            return ApiError(413, "too_large",
                            f"audio over {self._limit} bytes before audio.end; discarded")
        self._data.extend(data)
        return None

    def take(self) -> bytes | None:
        """At ``audio.end``: the audio, or None when this upload was refused (the client
        was told)."""
        audio, refused = bytes(self._data), self._refused
        self.release()
        self._refused = False
        return None if refused else audio

    def discard(self) -> int:
        """Drop what is buffered (a live stream starts); how many bytes that was."""
        dropped = len(self._data)
        self.release()
        self._refused = False
        return dropped

    def release(self) -> None:
        self._data = bytearray()
        if self._holding:
            self._holding = False
            self._places.leave(self._workspace_id)

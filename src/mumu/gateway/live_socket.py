"""A websocket's live stream: ``stream.start``, binary frames, ``stream.end``
(``docs/audio.md``, "Websocket and Realtime").

One stream per socket at a time. The client learns that a stream is over (every final of
it delivered) from the transcribe stage's ``stream.ended`` event, which reaches the
session's sockets like its finals; an ``error`` says why the gateway ended one early.
While it runs it holds one of the gateway's audio places
(``MUMU_GATEWAY__MAX_AUDIO_BUFFERS``), and a watchdog ends it after
``MUMU_GATEWAY__STREAM_IDLE_TIMEOUT`` seconds without audio. Every refusal is an ``error``
message; the socket and the workspace's other streams go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from mumu.contracts.ids import is_id
from mumu.contracts.options import AudioOptions
from mumu.gateway.audio_buffer import AudioBuffer
from mumu.gateway.binding import validated
from mumu.gateway.client_messages import (
    BAD_MESSAGE,
    LIVE_FORMATS,
    LIVE_SAMPLE_RATE,
    StreamEndMessage,
    StreamStartMessage,
)
from mumu.gateway.errors import ApiError
from mumu.gateway.live import LiveOut
from mumu.gateway.webm import UndecodableAudioError, WebmDecoder

if TYPE_CHECKING:
    from mumu.gateway.sockets import ClientSocket

log = logging.getLogger("mumu.gateway.ws")


class LiveSocket:
    def __init__(self, client: ClientSocket, upload: AudioBuffer) -> None:
        self.client = client
        self._upload = upload
        """The socket's audio.end upload buffer: frames before stream.start went there."""
        self._out: LiveOut | None = None
        self._decoder: WebmDecoder | None = None
        self._pump: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._draining = False
        """The server ended the stream (too long, timeout, bad audio): frames are dropped
        and the client's ``stream.end`` is taken quietly."""
        self._ending = asyncio.Lock()
        """Held while the server ends a stream: a ``stream.start`` sent on its ``error``
        waits for that end instead of meeting ``busy``."""

    @property
    def running(self) -> bool:
        return self._out is not None or self._draining

    async def start(self, message: dict[str, Any]) -> None:
        start = validated(StreamStartMessage, message, BAD_MESSAGE)
        async with self._ending:  # a stream the server is ending is gone after this
            pass
        if self._out is not None:
            raise ApiError(409, "busy", f"a stream is running (stream_id {self._out.stream_id})"
                           ": send stream.end first", request_id=self._out.request_id)
        fmt = start.format.lower()
        if fmt not in LIVE_FORMATS:
            raise ApiError(415, "unsupported_audio",
                           f"format {start.format!r}: a live stream is pcm16 or webm")
        if start.sample_rate is not None and (
                fmt != "pcm16" or start.sample_rate != LIVE_SAMPLE_RATE):
            raise ApiError(415, "unsupported_audio",
                           f"sample_rate {start.sample_rate}: pcm16 streams are 16000 Hz mono"
                           if fmt == "pcm16" else "sample_rate is for pcm16 only")
        if start.request_id is not None and not is_id(start.request_id):
            raise ApiError(400, BAD_MESSAGE, "request_id: 1 to 48 of A-Z a-z 0-9 _ -")
        options = validated(AudioOptions, {"language": start.language, "prompt": start.prompt,
                                           "answer": start.answer,
                                           "word_timestamps": start.word_timestamps},
                            BAD_MESSAGE)
        client = self.client
        buffered = self._upload.discard()
        if buffered:
            client.error("frames_before_start", f"{buffered} bytes of binary frames came "
                         "before stream.start: discarded (frames before stream.start are an "
                         "upload for audio.end)")
        self._draining = False
        ws = client.claims.workspace_id
        client.admit()
        places = client.deps.admission.audio_buffers
        places.enter(ws)
        try:
            out = await client.deps.live.open(ws, client.claims.session_id, options,
                                              start.request_id)
        except BaseException:
            places.leave(ws)
            raise
        self._out = out
        client.deps.metrics.asks.labels("live").inc()
        if fmt == "webm":
            self._decoder = WebmDecoder()
            await self._decoder.__aenter__()
            self._pump = asyncio.create_task(self._decode(self._decoder, out))
        self._watchdog = asyncio.create_task(self._watch(out))
        client.control("stream.started", out.request_id, stream_id=out.stream_id, format=fmt)

    async def frame(self, data: bytes) -> None:
        out = self._out
        if out is None:
            return  # draining: the client was told why
        try:
            if self._decoder is not None:
                await self._decoder.feed(data)
            else:
                await out.write(data)
        except ApiError as exc:
            await self._server_end(exc)

    async def end(self, message: dict[str, Any]) -> None:
        validated(StreamEndMessage, message, BAD_MESSAGE)
        if self._out is None:
            if self._draining:  # ended by the server already (the client was told)
                self._draining = False
                return
            raise ApiError(400, "no_stream", "stream.end without a running stream "
                           "(send stream.start first)")
        out = await self._drain_decoder()
        if out is None:  # the decoder ended it (and told the client)
            self._draining = False
            return
        try:
            await out.end()
        except ApiError as exc:
            await self._server_end(exc)
            self._draining = False
            return
        await self._release()  # stream.ended comes from the stage, after the last final

    async def close(self) -> None:
        """The socket is closing: end the stream (what was said becomes final)."""
        out = await self._drain_decoder()
        if out is not None:
            with contextlib.suppress(ApiError):
                await out.end()
            await self._release()
        self._draining = False

    async def _drain_decoder(self) -> LiveOut | None:
        """webm: decode what the client sent, to its end; the stream then, if it runs."""
        if self._decoder is not None and self._pump is not None:
            self._decoder.close_input()
            await asyncio.gather(self._pump, return_exceptions=True)
        return self._out

    async def _release(self) -> None:
        out, self._out = self._out, None
        tasks = [t for t in (self._watchdog, self._pump)
                 if t is not None and t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._watchdog = self._pump = None
        if self._decoder is not None:
            decoder, self._decoder = self._decoder, None
            await decoder.__aexit__(None, None, None)
        if out is not None:
            self.client.deps.admission.audio_buffers.leave(out.start.workspace_id)

    async def _server_end(self, exc: ApiError) -> None:
        """End the stream for the client's sake and say why."""
        async with self._ending:
            out = self._out
            if out is None:
                return
            self.client.error(exc.code, exc.message, out.request_id)
            try:
                await out.end()
            except ApiError as failed:  # the stage ends it at its idle timeout
                await out.abandon()
                self.client.error(failed.code, failed.message, out.request_id)
            self._draining = True
            await self._release()

    async def _decode(self, decoder: WebmDecoder, out: LiveOut) -> None:
        """The webm stream's pump: decoded audio into the stream."""
        try:
            async for pcm in decoder.pcm():
                await out.write(pcm)
        except UndecodableAudioError as exc:
            await self._server_end(ApiError(415, "unsupported_audio", f"webm stream: {exc}",
                                            request_id=out.request_id))
        except ApiError as exc:
            await self._server_end(exc)

    async def _watch(self, out: LiveOut) -> None:
        timeout = self.client.deps.settings.gateway.stream_idle_timeout
        while True:
            idle = time.monotonic() - out.last_audio
            if idle >= timeout:
                break
            await asyncio.sleep(timeout - idle)
        self._watchdog = None  # this task ends the stream: _release must not cancel it
        await self._server_end(ApiError(408, "stream_timeout", f"no audio for {timeout:g} s "
                                        "and no stream.end: the stream is ended and what was "
                                        "said is final", request_id=out.request_id))

"""Playlists and lists that make FFmpeg open other files or URLs, and traps that see it.

A trap directory holds FIFOs and a TCP socket listens on loopback. Opening a FIFO for
reading blocks until a writer comes, so a demuxer that opens one hangs there: a watcher
thread sees the blocked reader (a non-blocking open for writing succeeds only while a
reader has it open), records it and releases it (the reader gets end-of-file, so a
failing test fails instead of hanging). The socket records every connection and closes
it. After the decode is over, ``opened`` and ``connections`` say what FFmpeg touched.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

ID3_EMPTY_TAG = b"ID3\x04\x00\x00\x00\x00\x00\x00"
"""An ID3v2.4 tag of size 0: FFmpeg skips it before probing what follows."""
POLL = 0.01


def riff(payload: bytes) -> bytes:
    """A RIFF/WAVE header in front: passes the sniff, so the wav demuxer gets the rest."""
    return b"RIFF" + (len(payload) + 4).to_bytes(4, "little") + b"WAVE" + payload


@dataclass
class Traps:
    dir: Path
    port: int
    opened: list[str] = field(default_factory=list)
    connections: list[tuple[str, int]] = field(default_factory=list)

    @property
    def fifo(self) -> Path:
        """An absolute path (a media extension: hls refuses others for local segments)."""
        return self.dir / "secret.ts"

    relative = "local.wav"
    """A FIFO named relative to the working directory (the test chdirs into ``dir``)."""

    def payloads(self) -> dict[str, bytes]:
        """Every attack: HLS and concat, at a local file and at a loopback URL."""
        url = f"http://127.0.0.1:{self.port}"
        hls = "#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{}\n#EXT-X-ENDLIST\n"
        plain = {
            "hls_file_url": hls.format(f"file://{self.fifo}"),
            "hls_file_path": hls.format(self.fifo),
            "hls_loopback": hls.format(f"{url}/x.ts"),
            "concat_file": f"ffconcat version 1.0\nfile '{self.fifo}'\n",
            "concat_relative": f"ffconcat version 1.0\nfile '{self.relative}'\n",
            "concat_loopback": f"ffconcat version 1.0\nfile '{url}/x.wav'\n",
        }
        out = {name: text.encode() for name, text in plain.items()}
        out |= {f"id3_{name}": ID3_EMPTY_TAG + data for name, data in list(out.items())}
        return out

    def quiet(self) -> bool:
        return not self.opened and not self.connections


@contextmanager
def traps(directory: Path) -> Iterator[Traps]:
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(POLL)
    t = Traps(directory, server.getsockname()[1])
    os.mkfifo(t.fifo)
    os.mkfifo(directory / t.relative)
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            for fifo in (t.fifo, directory / t.relative):
                with suppress(OSError):  # ENXIO: nobody has it open for reading
                    fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                    t.opened.append(str(fifo))  # before the reader can go on
                    os.close(fd)
            with suppress(TimeoutError):
                conn, peer = server.accept()
                t.connections.append(peer)
                conn.close()

    watcher = threading.Thread(target=watch, name="hostile-audio-traps", daemon=True)
    watcher.start()
    try:
        yield t
    finally:
        stop.set()
        watcher.join()
        server.setblocking(False)
        with suppress(BlockingIOError):  # one that completed its handshake after the last poll
            conn, peer = server.accept()
            t.connections.append(peer)
            conn.close()
        server.close()

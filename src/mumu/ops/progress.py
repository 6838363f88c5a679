"""A progress bar with ETA on a terminal (stderr), redrawn a few times a second."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import TextIO

from mumu.ops.scan import ScanResult

WIDTH = 30


def bar(source: str, done: int, total: int, seconds: float) -> str:
    """``MUMU_RESULTS [#######.......]  45%  45000/100000  12000/s  ETA 0:04``."""
    rate = done / seconds if seconds > 0 else 0.0
    if total > 0:
        share = min(done / total, 1.0)
        filled = int(share * WIDTH)
        left = max(total - done, 0)
        eta = _clock(left / rate) if rate > 0 else "?"
        return (f"{source} [{'#' * filled}{'.' * (WIDTH - filled)}] {share:4.0%}  "
                f"{done}/{total}  {rate:.0f}/s  ETA {eta}")
    return f"{source} {done} read  {rate:.0f}/s"


def _clock(seconds: float) -> str:
    s = int(seconds + 0.5)
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """Told by the replay which source it reads (``on_read``); draws only on a terminal."""

    def __init__(self, out: TextIO, *, period: float = 0.2) -> None:
        self.out = out
        self.period = period
        self.enabled = out.isatty()
        self._source = ""
        self._total = 0
        self._result: ScanResult | None = None
        self._started = time.perf_counter()

    def on_read(self, source: str, total: int, result: ScanResult) -> None:
        self._source, self._total, self._result = source, total, result
        self._started = time.perf_counter()

    def line(self) -> str:
        done = self._result.read if self._result else 0
        return bar(self._source, done, self._total, time.perf_counter() - self._started)

    @contextlib.asynccontextmanager
    async def shown(self) -> AsyncIterator[Progress]:
        """Draws while the block runs (nothing when the output is not a terminal)."""
        if not self.enabled:
            yield self
            return
        task = asyncio.create_task(self._draw())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self.out.write("\r" + self.line() + "\n")
            self.out.flush()

    async def _draw(self) -> None:
        while True:
            if self._result is not None:
                self.out.write("\r" + self.line() + "\x1b[K")
                self.out.flush()
            await asyncio.sleep(self.period)

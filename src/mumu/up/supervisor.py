"""Child processes of ``mumu up``: started, restarted when they crash, stopped in order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

RESTART_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)


@dataclass
class Child:
    """One supervised ``python -m mumu ...`` process; its output goes to ``log_file``."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_file: Path
    restarts: int = 0
    proc: asyncio.subprocess.Process | None = field(default=None, repr=False)

    async def start(self) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "mumu", *self.args, env=self.env,
                stdout=out, stderr=out, start_new_session=True,
            )
        log.info("started %s (pid %d), log %s", self.name, self.proc.pid, self.log_file)

    async def stop(self, timeout: float) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            log.warning("%s did not stop in %.0fs; killing it", self.name, timeout)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


class Supervisor:
    """Keeps children running until ``stop`` is set; a crashed child is restarted."""

    def __init__(self, children: list[Child], drain_timeout: float) -> None:
        self.children = children
        self.drain_timeout = drain_timeout

    async def run(self, stop: asyncio.Event) -> None:
        for child in self.children:
            await child.start()
        async with asyncio.TaskGroup() as tg:
            for child in self.children:
                tg.create_task(self._watch(child, stop))
            await stop.wait()
            # stages drain in-flight work first; the gateway last, so clients hear the end
            await asyncio.gather(
                *(c.stop(self.drain_timeout + 5) for c in self.children if c.name != "gateway")
            )
            await asyncio.gather(
                *(c.stop(10) for c in self.children if c.name == "gateway")
            )

    async def _watch(self, child: Child, stop: asyncio.Event) -> None:
        while not stop.is_set():
            proc = child.proc
            if proc is None:
                return
            waiter = asyncio.ensure_future(proc.wait())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if stop.is_set():
                waiter.cancel()
                return
            delay = RESTART_DELAYS[min(child.restarts, len(RESTART_DELAYS) - 1)]
            log.error(
                "%s exited with %s; restarting in %.0fs (see %s)",
                child.name, proc.returncode, delay, child.log_file,
            )
            child.restarts += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if not stop.is_set():
                await child.start()


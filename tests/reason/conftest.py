"""Fixtures of the reason tests: a real llama.cpp server with the default GGUF."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mumu.settings import Settings
from mumu.stages.reason.llama_backend import default_model_path
from mumu.stages.reason.settings import OpenAIBackendSettings, ReasonSettings

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ModelServer:
    """``tests.reason.llama_server`` (llama.cpp's server + a request log) as a child process."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.log = workdir / "requests.jsonl"
        self.output = workdir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 60.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.output.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.reason.llama_server",
                    "--model",
                    str(default_model_path()),
                    "--port",
                    str(self.port),
                    "--log",
                    str(self.log),
                ],
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"model server exited: {self.output.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError("model server did not start")

    def kill(self) -> None:
        """SIGKILL: the server dies mid-answer, connections drop."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def requests(self) -> list[dict[str, Any]]:
        """Bodies of every chat completion the server received, in order."""
        if not self.log.exists():
            return []
        rows = [json.loads(line) for line in self.log.read_text().splitlines() if line]
        return [r["body"] for r in rows if r["path"].endswith("/chat/completions")]


@pytest.fixture(scope="module")
def model_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServer]:
    server = ModelServer(tmp_path_factory.mktemp("llama"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def reason_settings(settings: Settings, base_url: str, **overrides: Any) -> Settings:
    """The test settings with the reason stage on the ``openai`` backend at ``base_url``."""
    reason = ReasonSettings(
        backend="openai",
        openai=OpenAIBackendSettings(
            base_url=base_url,
            model="smollm2",
            retries=0,
            retry_backoff=0.1,
            read_timeout=60.0,  # a llama.cpp server on a loaded 2-core machine pauses for seconds
            connect_timeout=2.0,
        ),
        max_tokens=48,
        temperature=0.0,
        context_tokens=2048,
        delta_interval=0.03,
    )
    return settings.model_copy(update={"reason": reason.model_copy(update=overrides)})

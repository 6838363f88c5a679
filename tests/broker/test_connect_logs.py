"""A NATS URL's password never reaches a log line, also while reconnecting."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from mumu.broker.connect import connect
from mumu.broker.embedded import EmbeddedNats
from mumu.broker.settings import NatsSettings

PASSWORD = "n4ts-s3cret-pw"


async def test_reconnect_errors_log_the_url_without_its_password(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    server = EmbeddedNats(tmp_path / "nats", user="app", password=PASSWORD)
    await server.start()
    url = server.url.replace("nats://", f"nats://app:{PASSWORD}@")
    nc = await connect(NatsSettings(url=url, connect_timeout=1.0), name="logs")
    try:
        with caplog.at_level(logging.DEBUG, logger="mumu.broker.connect"):
            await server.stop()  # the client now fails to reconnect, and says so
            async with asyncio.timeout(10):
                while "NATS error on" not in caplog.text:
                    await asyncio.sleep(0.05)
    finally:
        await nc.close()
    assert "nats://app:***@127.0.0.1" in caplog.text
    assert PASSWORD not in caplog.text

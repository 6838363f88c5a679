"""What the session store needs of a JetStream KV bucket, in memory (for handler tests
without a server; the real bucket is used by every other reason test)."""

from __future__ import annotations

from dataclasses import dataclass

import nats.js.errors


@dataclass
class Entry:
    value: bytes
    revision: int


class MemoryKV:
    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}
        self._revision = 0

    async def get(self, key: str) -> Entry:
        if key not in self.entries:
            raise nats.js.errors.KeyNotFoundError
        return self.entries[key]

    async def create(self, key: str, value: bytes) -> int:
        if key in self.entries:
            raise nats.js.errors.KeyWrongLastSequenceError
        return self._put(key, value)

    async def update(self, key: str, value: bytes, last: int) -> int:
        if key not in self.entries or self.entries[key].revision != last:
            raise nats.js.errors.KeyWrongLastSequenceError
        return self._put(key, value)

    def _put(self, key: str, value: bytes) -> int:
        self._revision += 1
        self.entries[key] = Entry(value, self._revision)
        return self._revision

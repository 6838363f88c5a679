"""Caps on what holds gateway memory for long: open websockets, websocket audio buffers,
and requests that wait for their result (``?wait=true``, the OpenAI route).

Each is a ``Slots``: counted places, per workspace and in total, in this process. A
request past the workspace's cap gets ``429`` (the tenant's own doing), one past the
total gets ``503`` (this replica is full); both carry ``Retry-After`` and a message
naming the setting. Counting is synchronous (no awaits), so it is exact.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from mumu.gateway.errors import ApiError

RETRY_AFTER = "5"


@dataclass
class Slots:
    what: str
    """What is counted, plural ("open websockets")."""
    total: int
    per_workspace: int
    setting: str
    """The settings' name (``MUMU_GATEWAY__<setting>`` and ``..._PER_WORKSPACE``)."""
    code: str
    """The error code of a refusal past the workspace's cap."""
    used: int = 0
    _by_workspace: dict[str, int] = field(default_factory=dict)

    def in_use(self, workspace_id: str) -> int:
        return self._by_workspace.get(workspace_id, 0)

    def enter(self, workspace_id: str | None = None) -> None:
        """Take a place (and, with ``workspace_id``, the workspace's); raises ``ApiError``
        (503 or 429) when none is free."""
        if self.used >= self.total:
            raise ApiError(
                503, "overloaded",
                f"this gateway holds {self.used} {self.what}, its limit "
                f"(MUMU_GATEWAY__{self.setting}); retry later or use another replica",
                headers={"Retry-After": RETRY_AFTER},
            )
        if workspace_id is not None:
            self._join(workspace_id)
        self.used += 1

    def join(self, workspace_id: str) -> None:
        """A place taken without a workspace (a socket before its auth message) now
        counts for ``workspace_id`` too; raises ``ApiError`` (429) when it is full."""
        self._join(workspace_id)

    def _join(self, workspace_id: str) -> None:
        held = self.in_use(workspace_id)
        if held >= self.per_workspace:
            raise ApiError(
                429, self.code,
                f"this workspace holds {held} {self.what} on this gateway, its limit "
                f"(MUMU_GATEWAY__{self.setting}_PER_WORKSPACE); close one or retry later",
                headers={"Retry-After": RETRY_AFTER},
            )
        self._by_workspace[workspace_id] = held + 1

    def leave(self, workspace_id: str | None = None) -> None:
        """Give back a place (and the workspace's, when it was joined)."""
        self.used -= 1
        if workspace_id is not None:
            left = self._by_workspace[workspace_id] - 1
            if left:
                self._by_workspace[workspace_id] = left
            else:
                del self._by_workspace[workspace_id]

    @contextlib.contextmanager
    def held(self, workspace_id: str) -> Iterator[None]:
        self.enter(workspace_id)
        try:
            yield
        finally:
            self.leave(workspace_id)


@dataclass
class Admission:
    """The caps of one gateway process, from its settings."""

    sockets: Slots
    audio_buffers: Slots
    waiting: Slots

    @classmethod
    def of(cls, *, max_sockets: int, max_sockets_per_workspace: int, max_audio_buffers: int,
           max_audio_buffers_per_workspace: int, max_waiting: int,
           max_waiting_per_workspace: int) -> Admission:
        return cls(
            sockets=Slots("open websockets", max_sockets, max_sockets_per_workspace,
                          "MAX_SOCKETS", "too_many_sockets"),
            audio_buffers=Slots("websocket audio uploads in progress", max_audio_buffers,
                                max_audio_buffers_per_workspace, "MAX_AUDIO_BUFFERS",
                                "too_many_uploads"),
            waiting=Slots("requests waiting for their result (?wait=true and "
                          "/v1/audio/transcriptions)", max_waiting,
                          max_waiting_per_workspace, "MAX_WAITING", "too_many_waiting"),
        )

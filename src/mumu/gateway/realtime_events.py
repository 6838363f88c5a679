"""The OpenAI Realtime transcription surface's events: the session's configuration as the
client sets it (``transcription_session.update``, or ``session.update`` of type
``transcription``), the server events, and the append-only text of one item."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from mumu.contracts.options import AudioOptions

INVALID = "invalid_request_error"
INPUT_RATE = 24_000
"""OpenAI's ``pcm16`` (and GA ``audio/pcm``): 24 kHz mono signed 16-bit little-endian."""
SERVER_VAD: dict[str, Any] = {"type": "server_vad", "threshold": 0.5,
                              "prefix_padding_ms": 300, "silence_duration_ms": 500}


def event_id() -> str:
    return f"event_{uuid.uuid4().hex[:24]}"


def server_event(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "event_id": event_id(), **fields}


def error_event(code: str, message: str, client_event: str | None = None,
                param: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape."""
    return server_event("error", error={"type": INVALID, "code": code, "message": message,
                                        "param": param, "event_id": client_event})


class ConfigError(ValueError):
    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass
class SessionConfig:
    """What one session transcribes with."""

    model: str = "whisper-1"
    language: str | None = None
    prompt: str | None = None
    turn_detection: dict[str, Any] | None = field(default_factory=lambda: dict(SERVER_VAD))

    @property
    def server_vad(self) -> bool:
        return self.turn_detection is not None

    def options(self) -> AudioOptions:
        """Transcription only: a Realtime session answers nothing."""
        return AudioOptions(language=self.language, prompt=self.prompt, answer=False)

    def update_beta(self, session: dict[str, Any]) -> None:
        """``transcription_session.update``'s ``session``."""
        fmt = session.get("input_audio_format", "pcm16")
        if fmt != "pcm16":
            raise ConfigError("session.input_audio_format",
                              f"input_audio_format {fmt!r}: this server takes pcm16 only")
        self._transcription(session.get("input_audio_transcription"), "session")
        if "turn_detection" in session:
            self._turn_detection(session["turn_detection"], "session.turn_detection")

    def update_ga(self, session: dict[str, Any]) -> None:
        """``session.update`` of ``"type": "transcription"`` (the GA shape)."""
        if session.get("type", "transcription") != "transcription":
            raise ConfigError("session.type", "this server has transcription sessions only")
        audio_in = (session.get("audio") or {}).get("input") or {}
        fmt = audio_in.get("format") or {"type": "audio/pcm", "rate": INPUT_RATE}
        if fmt.get("type") != "audio/pcm" or fmt.get("rate", INPUT_RATE) != INPUT_RATE:
            raise ConfigError("session.audio.input.format",
                              f"format {fmt!r}: this server takes audio/pcm at 24000 Hz only")
        self._transcription(audio_in.get("transcription"), "session.audio.input")
        if "turn_detection" in audio_in:
            self._turn_detection(audio_in["turn_detection"],
                                 "session.audio.input.turn_detection")

    def _transcription(self, value: Any, where: str) -> None:
        if value is None:
            return
        if not isinstance(value, dict):
            raise ConfigError(f"{where}.transcription", "transcription is an object")
        self.model = str(value.get("model") or self.model)
        self.prompt = value.get("prompt", self.prompt) or None
        language = value.get("language", self.language) or None
        try:
            AudioOptions(language=language, prompt=self.prompt)
        except ValueError as exc:
            raise ConfigError(f"{where}.transcription", f"language or prompt: {exc}") from exc
        self.language = language

    def _turn_detection(self, value: Any, where: str) -> None:
        if value is None:
            self.turn_detection = None
        elif isinstance(value, dict) and value.get("type", "server_vad") == "server_vad":
            self.turn_detection = {**SERVER_VAD, **value, "type": "server_vad"}
        else:
            raise ConfigError(where, "turn_detection is server_vad or null")

    def beta(self) -> dict[str, Any]:
        return {"object": "realtime.transcription_session", "input_audio_format": "pcm16",
                "input_audio_transcription": {"model": self.model, "language": self.language,
                                              "prompt": self.prompt},
                "turn_detection": self.turn_detection, "modalities": ["text"],
                "client_secret": None}

    def ga(self) -> dict[str, Any]:
        return {"type": "transcription", "object": "realtime.transcription_session",
                "audio": {"input": {
                    "format": {"type": "audio/pcm", "rate": INPUT_RATE},
                    "transcription": {"model": self.model, "language": self.language,
                                      "prompt": self.prompt},
                    "turn_detection": self.turn_detection}}}


@dataclass
class ItemText:
    """The transcript of one item as append-only deltas: committed text (never taken back)
    of each utterance in it, joined by spaces."""

    done: str = ""
    """The finished utterances' text."""
    delivered: str = ""

    def _target(self, text: str) -> str:
        return f"{self.done} {text}".strip() if self.done else text.strip()

    def delta(self, committed: str) -> str:
        """What to append for the utterance's committed text (nothing if it is no growth)."""
        target = self._target(committed)
        if not target.startswith(self.delivered) or target == self.delivered:
            return ""
        grown, self.delivered = target[len(self.delivered):], target
        return grown

    def finish(self, text: str) -> str:
        """An utterance's final: what is left to append; the item's text is ``delivered``."""
        grown = self.delta(text)
        self.done = self._target(text)
        self.delivered = self.done
        return grown

"""Settings of live speech (``MUMU_TRANSCRIBE__LIVE__*``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

ENCODER_MARGIN = 2.0
"""The default ``encoder_margin`` (measured in docs/audio.md, "Short-context decodes")."""


class LiveSettings(BaseModel):
    step: float = Field(
        default=1.0, gt=0, le=10,
        description="seconds of new audio between two decodes of an utterance (partials)",
    )
    silence: float = Field(
        default=0.6, gt=0, le=10,
        description="trailing silence (seconds, in the audio) that ends an utterance",
    )
    max_utterance: float = Field(
        default=30.0, gt=1, description="an utterance this long (seconds) ends anyway",
    )
    trim_after: float = Field(
        default=12.0, gt=1,
        description="a decode window longer than this starts at the last committed sentence "
        "end (its words go in as the prompt)",
    )
    keep_before_speech: float = Field(
        default=0.3, ge=0, description="seconds kept before speech while waiting for it",
    )
    idle_timeout: float = Field(
        default=30.0, gt=0,
        description="a stream with no chunk for this long is ended (its last utterance "
        "is final) with a `stream_timeout` error",
    )
    takeover: float = Field(
        default=6.0, gt=1,
        description="seconds after which another replica takes over the stream of a replica "
        "that died (the live route's ack wait; its heartbeat comes every third of it)",
    )
    endpoint_step: float = Field(
        default=0.2, gt=0, le=10,
        description="seconds of new audio between two endpoint checks (VAD over the tail of "
        "the utterance, no decode): an utterance ends within this much of `silence`",
    )
    pause: float = Field(
        default=0.4, ge=0,
        description="trailing silence (seconds, from the unpadded end of speech; 0.3 s from "
        "the padded end before) after which the utterance is decoded at once "
        "up to the end of speech, ahead of the next `step`: if the speaker does not go on, "
        "that hypothesis becomes the final without another decode (0: off)",
    )
    gap_wait: float = Field(
        default=2.0, ge=0,
        description="seconds (by JetStream's stored times) a chunk past a missing sequence "
        "number waits for it; then the gap is skipped, logged and counted",
    )
    barge_in: bool = Field(
        default=True,
        description="the first words of an utterance cancel the answer to the stream's "
        "previous utterance (a `mumu.control.cancel.<ws>` for its request id)",
    )
    encoder_margin: float = Field(
        default=ENCODER_MARGIN, ge=0, le=30,
        description="seconds of padding the Whisper encoder gets after a live decode's "
        "window (its input is the window plus this, not Whisper's padded 30 s: 4-6x less "
        "CPU per decode); 0: the padded 30 s",
    )
    concurrency: int = Field(
        default=4, ge=1, description="live streams one transcribe process serves at once",
    )
    batch: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="decode steps of several live streams that fall within `batch_window_ms` "
        "go to the model as one batched call (one encoder pass, one generate, one align); "
        "auto: on when the model runs on CUDA, off on CPU (where a batch costs what its "
        "decodes cost one by one)",
    )
    batch_window_ms: float = Field(
        default=5.0, ge=0, le=1000,
        description="how long the first live decode of a batch waits for others (decodes "
        "that queued while the model was busy go in at once)",
    )
    max_batch: int = Field(
        default=8, ge=1, le=64, description="most live decodes in one batched call",
    )

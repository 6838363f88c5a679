"""NATS header names of the contracts."""

from typing import Final

MSG_ID: Final = "Nats-Msg-Id"
TRACEPARENT: Final = "traceparent"
TRACESTATE: Final = "tracestate"
CONTENT_TYPE: Final = "Content-Type"
TTL: Final = "Nats-TTL"
"""Per-message TTL in seconds (nats-server 2.11+, a stream with ``allow_msg_ttl``)."""

# JetStream atomic batch publish (nats-server 2.12+, ADR-50)
BATCH_ID: Final = "Nats-Batch-Id"
BATCH_SEQUENCE: Final = "Nats-Batch-Sequence"
BATCH_COMMIT: Final = "Nats-Batch-Commit"

# ingest audio (raw bytes in the body)
SESSION: Final = "Mumu-Session"
REQUEST_ID: Final = "Mumu-Request-Id"
LANGUAGE: Final = "Mumu-Language"
TASK: Final = "Mumu-Task"
PROMPT: Final = "Mumu-Prompt"
WORD_TIMESTAMPS: Final = "Mumu-Word-Timestamps"
VAD: Final = "Mumu-Vad"
BEAM_SIZE: Final = "Mumu-Beam-Size"
ANSWER: Final = "Mumu-Answer"
"""``false``: transcribe only; the reason stage does not answer (OpenAI transcription route)."""
AUDIO_OBJECT: Final = "Mumu-Audio-Object"
"""Names an object in the ``mumu-audio`` bucket instead of carrying bytes in the body."""

# dead letters (the body is the original payload, unchanged)
DLQ_STAGE: Final = "Mumu-Dlq-Stage"
DLQ_CODE: Final = "Mumu-Dlq-Code"
DLQ_REASON: Final = "Mumu-Dlq-Reason"
DLQ_SUBJECT: Final = "Mumu-Dlq-Subject"
DLQ_STREAM: Final = "Mumu-Dlq-Stream"
DLQ_SEQUENCE: Final = "Mumu-Dlq-Sequence"
DLQ_DELIVERIES: Final = "Mumu-Dlq-Deliveries"
DLQ_ORIGINAL_PREFIX: Final = "Mumu-Orig-"
DLQ_BODY_OMITTED: Final = "Mumu-Dlq-Body-Omitted"
"""``true`` on a dead letter too large to carry the original body: the original is
message ``Mumu-Dlq-Sequence`` of stream ``Mumu-Dlq-Stream`` (while that stream keeps it)."""
DLQ_BODY_SIZE: Final = "Mumu-Dlq-Body-Size"
"""Original headers are kept under this prefix (``Mumu-Orig-Nats-Msg-Id`` ...)."""

# replays (`mumu replay`, `mumu dlq replay`)
REPLAY: Final = "Mumu-Replay"
"""On every replayed message: the id of the replay that published it."""
REPLAY_SUBJECT: Final = "Mumu-Replay-Subject"
"""On a message replayed to one stage (``mumu.replay.<durable>.<ws>``): its original
subject, which the stage's handler sees."""
REPLAY_SOURCE: Final = "Mumu-Replay-Source"
"""``<stream>:<sequence>`` the replayed message was read from."""

"""Which event travels on which subject: the source of the AsyncAPI document."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from mumu.contracts import events as ev
from mumu.contracts import subjects as s


@dataclass(frozen=True)
class Channel:
    pattern: s.SubjectPattern
    model: type[BaseModel]
    summary: str
    binary: bool = False
    """True when the body is raw bytes and ``model`` describes the headers."""
    last_token: str = "workspace"
    middle_token: str | None = None
    """The token between the prefix and the last one, if any (dead letters: the stage)."""


CHANNELS: tuple[Channel, ...] = (
    Channel(s.INGEST_AUDIO, ev.IngestAudioHeaders,
            "Raw audio (wav, flac, ogg/opus, mp3, webm, m4a) with headers; or headers naming "
            "an object in the mumu-audio bucket", binary=True),
    Channel(s.INGEST_TEXT, ev.TextAsk, "A question asked as text"),
    Channel(s.INGEST_LIVE, ev.LiveStart,
            "A live stream begins; its PCM16 chunks follow on "
            "mumu.ingest.chunk.<stream_id>.<ws> (Mumu-Chunk-Seq from 1, Mumu-Stream-End: true "
            "on the last)"),
    Channel(s.AUDIO_READY, ev.AudioReady, "Normalised 16 kHz mono audio is ready"),
    Channel(s.TRANSCRIPT_PARTIAL, ev.TranscriptPartial, "One decoded segment, as it is decoded"),
    Channel(s.TRANSCRIPT_FINAL, ev.TranscriptFinal, "The whole transcript"),
    Channel(s.STREAM_ENDED, ev.LiveEnded,
            "A live stream is over: exactly one per stream, after its last final"),
    Channel(s.ANSWER_DELTA, ev.AnswerDelta, "A chunk of the streamed answer"),
    Channel(s.ANSWER_FINAL, ev.AnswerFinal, "The whole answer"),
    Channel(s.PERSISTED, ev.Persisted, "A transcript or answer is stored, encrypted"),
    Channel(s.ERROR, ev.PipelineError, "A request failed; shown to the client"),
    Channel(s.CONTROL_CANCEL, ev.CancelRequest, "Stop the answer of a request"),
    Channel(s.DLQ, ev.DeadLetterHeaders,
            "Dead letters: the original payload, its headers (prefixed Mumu-Orig-) and the "
            "reason; one subject per stage and workspace", binary=True, middle_token="stage"),
    Channel(s.CONTROL_SHRED, ev.WorkspaceShredded,
            "A workspace was crypto-shredded: drop its cached data keys"),
)

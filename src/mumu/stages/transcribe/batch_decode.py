"""Decoding several requests together (cross-request micro-batching).

Each request is cut into ≤ 30 s chunks (whole audio when it is short, Silero VAD
otherwise or when asked), its language is detected when not given, and the chunks of
all requests that share a decoding plan (language, task and the decoding arguments) go
through ``BatchedInferencePipeline.forward`` together, ``batch_size`` chunks per pass.

The request's options reach the model through the engine's one mapping,
``transcribe_kwargs``: ``plan`` splits those arguments into what chooses the chunks
(``vad_filter``), the tokenizer (``language``, ``task``) and the decoding options
(every other argument, a ``TranscriptionOptions`` field); an argument it has no place
for is an error, never dropped. Requests asking for word timestamps are decoded by the
engine on their own (the pipeline keeps word-timing state between batches), so a plan
refuses them. Blocking: runs in the engine's thread pool.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, fields
from typing import Any, Final

import numpy as np

from mumu.contracts.options import AudioOptions
from mumu.stages.transcribe.engine import Job, Result, to_segment, transcribe_kwargs

CHUNK_SECONDS = 30


# decoding arguments of the batched path that no request option sets: the values
# faster-whisper's own ``BatchedInferencePipeline.transcribe`` uses (one temperature, no
# text conditioning across chunks, no timestamps in the text, no word timing)
_FIXED: Final[dict[str, Any]] = {
    "best_of": 5, "patience": 1, "length_penalty": 1, "repetition_penalty": 1,
    "no_repeat_ngram_size": 0, "log_prob_threshold": -1.0, "no_speech_threshold": 0.6,
    "compression_ratio_threshold": 2.4, "temperatures": (0.0,), "prefix": None,
    "suppress_blank": True, "prepend_punctuations": "\"'([{-",
    "append_punctuations": "\"'.,!?:)]}", "max_new_tokens": None, "hotwords": None,
    "word_timestamps": False, "hallucination_silence_threshold": None,
    "condition_on_previous_text": False, "clip_timestamps": (),
    "prompt_reset_on_temperature": 0.5, "multilingual": False, "without_timestamps": True,
    "max_initial_timestamp": 0.0,
}


@dataclass(frozen=True)
class Plan:
    """How one request is decoded in a batch, from ``transcribe_kwargs`` alone."""

    language: str | None
    task: str
    vad: bool
    decoding: tuple[tuple[str, Any], ...]
    """``TranscriptionOptions`` fields the request sets (``initial_prompt``, ``beam_size``)."""

    def group(self, language: str) -> tuple[Any, ...]:
        """Requests with equal keys share one tokenizer and one ``TranscriptionOptions``."""
        return (language, self.task, self.decoding)


def plan(options: AudioOptions) -> Plan:
    """Split the engine's model arguments for ``options`` over the batched decode."""
    from faster_whisper.transcribe import TranscriptionOptions

    kwargs = transcribe_kwargs(options)
    if kwargs.pop("word_timestamps"):
        raise ValueError("word timestamps are decoded per request (the engine), not batched")
    language, task, vad = kwargs.pop("language"), kwargs.pop("task"), kwargs.pop("vad_filter")
    unknown = set(kwargs) - {f.name for f in fields(TranscriptionOptions)}
    if unknown:
        raise TypeError(f"the batched decode has no place for {sorted(unknown)}")
    return Plan(language, task, vad, tuple(sorted(kwargs.items())))


def decoding_options(p: Plan, tokenizer: Any) -> Any:
    """``TranscriptionOptions`` of a plan: the fixed batched values, then the request's."""
    from faster_whisper.transcribe import TranscriptionOptions, get_suppressed_tokens

    return TranscriptionOptions(**{
        **_FIXED, "suppress_tokens": get_suppressed_tokens(tokenizer, [-1]), **dict(p.decoding),
    })


@dataclass
class _Prepared:
    job: Job
    plan: Plan
    clips: list[dict[str, int]]
    features: list[np.ndarray]
    metadata: list[dict[str, Any]]
    language: str
    probability: float
    outputs: list[list[dict[str, Any]]]


def _prepare(model: Any, job: Job) -> _Prepared:
    from faster_whisper.vad import VadOptions, collect_chunks, get_speech_timestamps

    p = plan(job.options)
    audio = job.audio
    rate = model.feature_extractor.sampling_rate
    if p.vad or audio.shape[0] > CHUNK_SECONDS * rate:
        vad = VadOptions(max_speech_duration_s=CHUNK_SECONDS, min_silence_duration_ms=160)
        clips = get_speech_timestamps(audio, vad)
    else:
        clips = [{"start": 0, "end": int(audio.shape[0])}]
    chunks, metadata = collect_chunks(audio, clips, max_duration=CHUNK_SECONDS)
    features = [model.feature_extractor(c)[..., :-1] for c in chunks] if clips else []
    language, probability = p.language, 1.0
    if language is None:
        if not model.model.is_multilingual:
            language = "en"
        else:
            empty = [np.full((model.model.n_mels, 1), -1.5, dtype="float32")]
            language, probability, _ = model.detect_language(
                features=np.concatenate([*features, *empty], axis=1)
            )
    return _Prepared(job, p, clips, features, metadata, language, float(probability), [])


def run_batch(model: Any, jobs: list[Job], batch_size: int) -> list[Result | BaseException]:
    """Decode ``jobs`` together; one result (or the error of that job) per job, in order."""
    from faster_whisper import BatchedInferencePipeline
    from faster_whisper.audio import pad_or_trim
    from faster_whisper.tokenizer import Tokenizer

    started = time.perf_counter()
    pipeline = BatchedInferencePipeline(model)
    results: list[Result | BaseException] = [RuntimeError("not decoded")] * len(jobs)
    prepared: dict[int, _Prepared] = {}
    groups: dict[tuple[Any, ...], list[int]] = defaultdict(list)
    for i, job in enumerate(jobs):
        try:
            p = _prepare(model, job)
        except Exception as exc:  # noqa: BLE001 - one bad request must not sink the batch
            results[i] = exc
            continue
        prepared[i] = p
        groups[p.plan.group(p.language)].append(i)
    for (language, task, _), members in groups.items():
        tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task=task,
                              language=language)
        options = decoding_options(prepared[members[0]].plan, tokenizer)
        work = [(i, k) for i in members for k in range(len(prepared[i].features))]
        for i in members:
            prepared[i].outputs = [[] for _ in prepared[i].features]
        for start in range(0, len(work), batch_size):
            part = work[start:start + batch_size]
            feats = np.stack([pad_or_trim(prepared[i].features[k]) for i, k in part])
            meta = [prepared[i].metadata[k] for i, k in part]
            for (i, k), out in zip(part, pipeline.forward(feats, tokenizer, meta, options),
                                   strict=True):
                prepared[i].outputs[k] = out
    elapsed = time.perf_counter() - started
    total_audio = sum(max(p.job.audio.shape[0], 1) for p in prepared.values()) or 1
    for i, p in prepared.items():
        results[i] = _result(model, p, elapsed * p.job.audio.shape[0] / total_audio)
    return results


def _result(model: Any, p: _Prepared, compute_seconds: float) -> Result:
    from faster_whisper.transcribe import Segment as FwSegment
    from faster_whisper.transcribe import restore_speech_timestamps

    rate = model.feature_extractor.sampling_rate
    raw = [
        FwSegment(id=n, seek=s["seek"], start=round(s["start"], 3), end=round(s["end"], 3),
                  text=s["text"], tokens=s["tokens"], avg_logprob=s["avg_logprob"],
                  compression_ratio=s["compression_ratio"],
                  no_speech_prob=s["no_speech_prob"], words=None, temperature=0.0)
        for n, s in enumerate(s for chunk in p.outputs for s in chunk)
    ]
    segments = [to_segment(n, s) for n, s in
                enumerate(restore_speech_timestamps(raw, p.clips, rate))] if p.clips else []
    return Result(
        segments=segments, language=p.language,
        language_probability=round(p.probability, 4),
        duration=round(p.job.audio.shape[0] / rate, 3),
        compute_seconds=round(compute_seconds, 3),
    )

"""Several short-context windows (live decodes of different streams) in one model call.

``short_context`` decodes one window: the encoder on its frames plus a margin, one
``generate``, one ``align`` for the word times. Here the windows of a batch share those
three calls: the features of every window are padded with digital silence to the
batch's longest window plus its margin (the encoder takes one length per batch), then one
``encode`` of the stacked features, one ``generate`` with a prompt per window (its own
prompt text and language token), one ``align`` over the windows with text. The word-timing
rules of faster-whisper (``add_word_timestamps``) then run per window, as they do for a
single decode, on that window's part of the one alignment.

Differences from a single decode, bounded by ``tests/live/test_live_batch.py``: a window
shorter than the batch's longest sees more trailing silence than its margin (the
encoder output changes a little; a margin of 2 s and 3 s give the same live WER, see
docs/audio.md); the token bound is the batch's largest, each window's tokens then cut to
its own; the batch's numerics may differ in the last bits from a batch of one.

Only windows that ``short_context`` would decode short and whose language is known go
in a batch (the first decode of a stream without a language detects it on its own).
Blocking: runs in the engine's thread pool.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from mumu.contracts.options import AudioOptions
from mumu.stages.transcribe.short_context import (
    MAX_TOKENS_BASE,
    MAX_TOKENS_PER_SECOND,
    Decoded,
    spoken_tokens,
    window_options,
    window_segment,
)

Key = tuple[str, str, int, float, int]
"""Windows decoded together: language, task, beam size, encoder margin and the number of
prompt tokens (CTranslate2's batched ``generate`` needs the start of transcript at one
position in every prompt)."""


@dataclass(frozen=True)
class Window:
    audio: np.ndarray
    options: AudioOptions
    margin: float


def key(model: Any, window: Window) -> Key | None:
    """The batch ``window`` can go in, or None when it is decoded on its own (its
    language is not known yet, it has no margin, or with the margin it reaches 30 s)."""
    language = window.options.language if model.model.is_multilingual else "en"
    extractor = model.feature_extractor
    samples = window.audio.size + round(window.margin * extractor.sampling_rate)
    if language is None or window.margin <= 0 or \
            samples // extractor.hop_length >= extractor.nb_max_frames:
        return None
    prompt = len(_previous(model.hf_tokenizer, window.options)[-(model.max_length // 2 - 1):])
    return language, window.options.task, window.options.beam_size, window.margin, prompt


def group(model: Any, windows: list[Window]) -> tuple[dict[Key, list[int]], list[int]]:
    """Indexes of ``windows`` by batch key, and those decoded on their own."""
    batches: dict[Key, list[int]] = defaultdict(list)
    alone: list[int] = []
    for i, window in enumerate(windows):
        k = key(model, window)
        if k is None:
            alone.append(i)
        else:
            batches[k].append(i)
    return dict(batches), alone


class _Aligned:
    """What ``WhisperModel.add_word_timestamps`` uses of its model, with one window's
    alignment taken from the batch's one ``align``: its word-timing rules then run per
    window with ``last_speech_timestamp`` 0, as in a single decode (called on the whole
    batch they would carry one window's last word into the next window's rules, which is
    right for consecutive chunks of one file, not for windows of different streams)."""

    def __init__(self, model: Any, alignment: list[dict[str, Any]]) -> None:
        self.frames_per_second = model.frames_per_second
        self._alignment = alignment

    def find_alignment(self, *_: Any) -> list[list[dict[str, Any]]]:
        return [self._alignment]


def decode_windows(model: Any, windows: list[Window]) -> list[Decoded]:
    """Blocking: decode ``windows`` (one ``key``) in one encode, generate and align."""
    from faster_whisper.tokenizer import Tokenizer

    language, task, _, margin, _ = _one_key(model, windows)
    extractor = model.feature_extractor
    total = max(w.audio.size for w in windows) + round(margin * extractor.sampling_rate)
    features = [extractor(_padded(w.audio, total)) for w in windows]
    frames = features[0].shape[-1] - 1
    frames -= frames % 2  # the encoder's convolution halves it
    encoder_output = model.encode(np.stack([f[:, :frames] for f in features]))
    tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task=task,
                          language=language)
    contents = [w.audio.size // extractor.hop_length for w in windows]
    durations = [c * extractor.time_per_frame for c in contents]
    topts = [window_options(tokenizer, w.options) for w in windows]
    bounds = [MAX_TOKENS_BASE + math.ceil(MAX_TOKENS_PER_SECOND * d) for d in durations]
    prompts = [model.get_prompt(tokenizer, _previous(tokenizer.tokenizer, w.options),
                                without_timestamps=False) for w in windows]
    first = topts[0]
    results = model.model.generate(
        encoder_output, prompts, beam_size=first.beam_size, patience=first.patience,
        length_penalty=first.length_penalty, repetition_penalty=first.repetition_penalty,
        no_repeat_ngram_size=first.no_repeat_ngram_size,
        max_length=max(len(p) + b for p, b in zip(prompts, bounds, strict=True)),
        return_scores=True, return_no_speech_prob=True, suppress_blank=first.suppress_blank,
        suppress_tokens=first.suppress_tokens,
        max_initial_timestamp_index=round(first.max_initial_timestamp / model.time_precision),
    )
    spoken: list[_Spoken] = []
    for result, duration, bound, options in zip(results, durations, bounds, topts, strict=True):
        generated = result.sequences_ids[0]
        avg_logprob = result.scores[0] * len(generated) ** options.length_penalty \
            / (len(generated) + 1)  # as generate_with_fallback recovers it
        tokens = spoken_tokens(tokenizer, generated[:bound],
                               round(duration / model.time_precision))
        silent = (result.no_speech_prob > options.no_speech_threshold
                  and avg_logprob <= options.log_prob_threshold)  # generate_segments' rule
        text = tokenizer.decode(tokens).strip()
        spoken.append(_Spoken([] if silent or not text else tokens, text, avg_logprob,
                              result.no_speech_prob))
    return _timed(model, tokenizer, encoder_output, windows, contents=contents,
                  spoken=spoken, language=language)


@dataclass(frozen=True)
class _Spoken:
    tokens: list[int]
    """Empty: no text (silence, or nothing said in the window)."""
    text: str
    avg_logprob: float
    no_speech_prob: float


def _timed(model: Any, tokenizer: Any, encoder_output: Any, windows: list[Window], *,
           contents: list[int], spoken: list[_Spoken], language: str) -> list[Decoded]:
    """Each window as ``short_context`` gives it; the words of those with text (and word
    timestamps asked for) timed by one ``align`` over the batch."""
    from faster_whisper import WhisperModel

    text = [[t for t in s.tokens if t < tokenizer.eot] for s in spoken]
    timed = {i for i, w in enumerate(windows) if w.options.word_timestamps and text[i]}
    alignments = model.find_alignment(tokenizer, text, encoder_output, contents) \
        if timed else []
    out: list[Decoded] = []
    for i, window in enumerate(windows):
        said = spoken[i]
        if not said.tokens:
            out.append(Decoded([], language, 1.0))
            continue
        duration = contents[i] * model.feature_extractor.time_per_frame
        item: dict[str, Any] = {"seek": 0, "start": 0.0, "end": duration, "tokens": said.tokens}
        if i in timed:
            topts = window_options(tokenizer, window.options)
            WhisperModel.add_word_timestamps(
                _Aligned(model, alignments[i]), [[item]], tokenizer, None, contents[i],
                topts.prepend_punctuations, topts.append_punctuations,
                last_speech_timestamp=0.0)
        segment = window_segment(item, window.options).model_copy(update={
            "text": said.text, "avg_logprob": said.avg_logprob,
            "no_speech_prob": said.no_speech_prob})
        out.append(Decoded([segment], language, 1.0))
    return out


def _one_key(model: Any, windows: list[Window]) -> Key:
    keys = {key(model, w) for w in windows}
    if len(keys) != 1 or None in keys:
        raise ValueError(f"windows of one batch share one key, got {keys}")
    k = keys.pop()
    assert k is not None
    return k


def _padded(audio: np.ndarray, total: int) -> np.ndarray:
    out = np.zeros(total, dtype=np.float32)
    out[:audio.size] = audio
    return out


def _previous(hf_tokenizer: Any, options: AudioOptions) -> list[int]:
    """The prompt's tokens, as ``Tokenizer.encode`` gives them."""
    if not options.prompt:
        return []
    return list(hf_tokenizer.encode(" " + options.prompt.strip(), add_special_tokens=False).ids)


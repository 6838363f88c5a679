"""A decode of one window of at most 30 s with the encoder on the window alone.

``WhisperModel.transcribe`` pads every window's features to Whisper's 30 s (3,000 frames)
before the encoder, so a 3 s live step pays a 30 s encoder pass (89 % of its CPU). Here
the encoder gets the window followed by ``margin`` seconds of digital silence (the zero
samples Whisper pads its audio with), and the rest is faster-whisper's own pieces in the
order ``generate_segments`` calls them for a first window: ``encode``, language detection
on that encoder output, ``get_prompt``, ``generate_with_fallback`` (its no-speech check
kept), ``add_word_timestamps`` (CTranslate2's ``align`` on the same short encoder output).
The options are ``WhisperModel.transcribe``'s defaults but for the temperature fallback.

A short input does not show Whisper where the audio ends as the padded 30 s does: after
the window's words it often reads the window again (``<0.00> The doctor said.<2.00>
<2.00> The doctor said.<4.00>``). ``spoken_tokens`` keeps what comes before that.
The window is one segment: its words carry the times, which is what live decoding uses.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from mumu.contracts.events import Segment, Word
from mumu.contracts.options import AudioOptions

MAX_TOKENS_BASE = 16
MAX_TOKENS_PER_SECOND = 12


@dataclass(frozen=True)
class Decoded:
    segments: list[Segment]
    language: str
    language_probability: float


class ShortContext:
    """Short-context decodes on one loaded ``WhisperModel`` (no state of its own: safe
    from any thread of the engine's pool)."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def decode(self, audio: np.ndarray, options: AudioOptions, margin: float
               ) -> Decoded | None:
        """Blocking: decode ``audio`` (16 kHz mono float32, at most 30 s) with the encoder
        on its frames plus ``margin`` seconds; None when that would not be shorter than
        the padded 30 s (the caller decodes as usual)."""
        from faster_whisper.tokenizer import Tokenizer

        model = self.model
        extractor = model.feature_extractor
        content = audio.size // extractor.hop_length
        padding = np.zeros(round(margin * extractor.sampling_rate), dtype=np.float32)
        features = extractor(np.concatenate([audio.astype(np.float32, copy=False), padding]))
        frames = features.shape[-1] - 1
        frames -= frames % 2  # the encoder's convolution halves it
        if frames >= extractor.nb_max_frames:
            return None
        encoder_output = model.encode(features[:, :frames])
        language, probability = _language(model, encoder_output, options.language)
        tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual,
                              task=options.task, language=language)
        duration = content * model.feature_extractor.time_per_frame
        topts = window_options(tokenizer, options)
        # a re-reading runs to Whisper's 448 tokens unless bounded: the window's own words
        # fit in this even at twice the fastest speech (about 6 tokens a second)
        topts.max_new_tokens = MAX_TOKENS_BASE + math.ceil(MAX_TOKENS_PER_SECOND * duration)
        previous = tokenizer.encode(" " + options.prompt.strip()) if options.prompt else []
        prompt = model.get_prompt(tokenizer, previous, without_timestamps=False)
        result, avg_logprob, _, _ = model.generate_with_fallback(
            encoder_output, prompt, tokenizer, topts)
        tokens = spoken_tokens(tokenizer, result.sequences_ids[0],
                               round(duration / model.time_precision))
        text = tokenizer.decode(tokens).strip()
        silent = (result.no_speech_prob > topts.no_speech_threshold
                  and avg_logprob <= topts.log_prob_threshold)  # generate_segments' rule
        if silent or not text:
            return Decoded([], language, probability)
        segment = _segment(model, tokenizer, topts=topts, encoder_output=encoder_output,
                           content=content, tokens=tokens, options=options)
        return Decoded([segment.model_copy(update={
            "text": text, "avg_logprob": avg_logprob, "no_speech_prob": result.no_speech_prob,
        })], language, probability)


def _segment(model: Any, tokenizer: Any, *, topts: Any, encoder_output: Any, content: int,
             tokens: list[int], options: AudioOptions) -> Segment:
    """The window as one segment; its words timed by ``align`` on the same encoder output."""
    duration = content * model.feature_extractor.time_per_frame
    window: dict[str, Any] = {"seek": 0, "start": 0.0, "end": duration, "tokens": tokens}
    if options.word_timestamps:
        model.add_word_timestamps([[window]], tokenizer, encoder_output, content,
                                  topts.prepend_punctuations, topts.append_punctuations,
                                  last_speech_timestamp=0.0)
    return window_segment(window, options)


def window_segment(window: dict[str, Any], options: AudioOptions) -> Segment:
    """A window's dict (its words set by ``add_word_timestamps``) as the one segment."""
    words = [Word(start=round(w["start"], 3), end=round(w["end"], 3), word=w["word"],
                  probability=round(float(w["probability"]), 4))
             for w in window.get("words", [])]
    return Segment(
        id=0, start=round(float(window["start"]), 3), end=round(float(window["end"]), 3),
        text="", words=words if options.word_timestamps else None,
    )


def spoken_tokens(tokenizer: Any, tokens: list[int], end: int) -> list[int]:
    """The text tokens of the window, without what Whisper decodes after it: a segment
    that reaches the end of the audio (timestamp index ``end``) is the last, and a segment
    that starts with the window's first words again is the window read a second time
    (with a short encoder input Whisper tends to repeat the window after its end, which the
    padded 30 s never showed it: see docs/audio.md). Segments of zero length are dropped,
    as ``generate_segments`` drops them."""
    kept: list[int] = []
    first: list[str] | None = None
    for text, start, stop in _segments(tokenizer, tokens):
        if stop is not None and stop <= start:
            continue
        words = _words(tokenizer.decode(text))
        if first is None:
            first = words
        elif _repeats(words, first):
            break
        kept += text
        if stop is not None and stop >= end:
            break
    return _first_reading(tokenizer, kept)


def _first_reading(tokenizer: Any, tokens: list[int]) -> list[int]:
    """``tokens`` up to where their first three words come again (a re-reading inside one
    segment: "Remind me to call my sister after lunch, Remind me to call ...")."""
    words, groups = tokenizer.split_to_word_tokens(tokens)
    normal = [_words(w) for w in words]
    spoken = [i for i, w in enumerate(normal) if w]
    head = [normal[i] for i in spoken[:3]]
    for at in range(1, len(spoken) - 2):
        if [normal[i] for i in spoken[at:at + 3]] == head:
            return [t for group in groups[:spoken[at]] for t in group]
    return tokens


def _segments(tokenizer: Any, tokens: list[int]) -> list[tuple[list[int], int, int | None]]:
    """(text tokens, start, end) timestamp indexes of each segment (end None: open)."""
    out: list[tuple[list[int], int, int | None]] = []
    start: int | None = None
    text: list[int] = []
    for token in tokens:
        if token < tokenizer.eot:
            text.append(token)
        elif token >= tokenizer.timestamp_begin:
            stamp = token - tokenizer.timestamp_begin
            if start is None:
                start = stamp
            elif text:
                out.append((text, start, stamp))
                start, text = None, []
            else:
                start = stamp
    if text:
        out.append((text, start or 0, None))
    return out


def _words(text: str) -> list[str]:
    return "".join(c if c.isalnum() or c.isspace() else " " for c in text.lower()).split()


def _repeats(words: list[str], first: list[str]) -> bool:
    """``words`` starts as ``first`` does: its first three words (fewer if either is
    shorter) with at most one different ("We river flows" after "Which river flows")."""
    n = min(3, len(words), len(first))
    return n > 0 and sum(a != b for a, b in zip(words[:n], first[:n], strict=True)) <= (n - 1) // 2


def _language(model: Any, encoder_output: Any, language: str | None) -> tuple[str, float]:
    """The language asked for, or the one detected on this encoder output."""
    if not model.model.is_multilingual:
        return "en", 1.0
    if language is not None:
        return language, 1.0
    token, probability = model.model.detect_language(encoder_output)[0][0]
    return str(token[2:-2]), round(float(probability), 4)


def window_options(tokenizer: Any, options: AudioOptions) -> Any:
    """``WhisperModel.transcribe``'s own defaults (read from its signature), with the
    request's beam, prompt and word timing, and no temperature fallback."""
    from faster_whisper import WhisperModel
    from faster_whisper.transcribe import TranscriptionOptions, get_suppressed_tokens

    params = inspect.signature(WhisperModel.transcribe).parameters
    defaults = {f.name: params[f.name].default for f in dataclasses.fields(TranscriptionOptions)
                if f.name in params}
    return TranscriptionOptions(**{
        **defaults,
        # one temperature: the fallback's reruns (up to 5 more decodes) on a partial window
        # cost more than a live step is worth; the next step decodes the window again
        "temperatures": [0.0],
        "suppress_tokens": get_suppressed_tokens(tokenizer, params["suppress_tokens"].default),
        "beam_size": options.beam_size,
        "initial_prompt": options.prompt,
        "word_timestamps": options.word_timestamps,
        "without_timestamps": False,
        "multilingual": False,
        "clip_timestamps": [0.0],
    })

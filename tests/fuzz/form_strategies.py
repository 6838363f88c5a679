"""Hypothesis strategies of requests to the OpenAI audio routes: a valid multipart form (a
real clip as ``file``, ``model``) changed in up to two ways: a part dropped or given twice,
a field of its own, odd values of every field (``response_format``, ``temperature``,
``language``, ``prompt``, ``timestamp_granularities[]``, ``stream``, ``model``), huge
values, random or empty or cut or mislabelled audio, the file as a plain field; or a body
that is no multipart form at all (JSON, urlencoded, text, a broken multipart body)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from hypothesis import strategies as st

from tests.fuzz.audio_strategies import DATA, truncated
from tests.fuzz.header_strategies import ONE_LINE
from tests.fuzz.strategies import ODD_TEXT

CLIP = DATA / "speech" / "en01.wav"
ENVELOPES = ("json", "urlencoded", "text", "broken_multipart", "no_boundary")


@dataclass(frozen=True)
class Part:
    name: str
    value: str | bytes
    filename: str | None = None
    content_type: str | None = None

    def __repr__(self) -> str:
        return f"Part({self.name!r}, {self.value[:40]!r}.. ({len(self.value)}), " \
               f"{self.filename!r}, {self.content_type!r})"


@dataclass(frozen=True)
class Form:
    parts: tuple[Part, ...]
    envelope: str = "multipart"
    changes: int = 0
    """How many changes made it from the valid form (0: it must succeed)."""


# the clip's words: tests/fuzz/test_openai_forms.py
VALID = Form((Part("file", CLIP.read_bytes(), "clip.wav", "audio/wav"),
              Part("model", "whisper-1")))
FIELD_VALUES = {
    "language": st.sampled_from(["en", "xx", "EN", "english", "", "e\u0301n"]) | ODD_TEXT,
    "prompt": st.just("Names: Ada.") | ODD_TEXT | st.integers(2001, 3000).map("p".__mul__),
    "response_format": st.sampled_from(["json", "text", "srt", "vtt", "verbose_json", "xml",
                                        "", "JSON"]) | ODD_TEXT,
    "temperature": st.sampled_from(["0", "1", "0.5", "-1", "2", "nan", "inf", "hot", ""]),
    "timestamp_granularities[]": st.sampled_from(["word", "segment", "char", ""]),
    "stream": st.sampled_from(["true", "false", "maybe", "1", ""]),
    "model": st.sampled_from(["whisper-1", ""]) | ODD_TEXT
    | st.integers(100_000, 100_001).map("m".__mul__),
}
audio = st.one_of(
    st.binary(max_size=2048), st.just(b""), truncated,
    st.integers(2 << 20, (2 << 20) + 1).map(bytes),  # over the test gateway's body limit
)


def _without(form: Form, name: str) -> Form:
    return replace(form, parts=tuple(p for p in form.parts if p.name != name))


def _with(form: Form, part: Part) -> Form:
    return replace(form, parts=(*form.parts, part))


def _set(form: Form, part: Part) -> Form:
    return _with(_without(form, part.name), part)


def change(form: Form) -> st.SearchStrategy[Form]:
    """``form`` changed in one way."""
    file = next((p for p in form.parts if p.name == "file"), VALID.parts[0])
    changed = st.one_of(
        st.sampled_from(["file", "model"]).map(lambda name: _without(form, name)),
        st.builds(lambda data: _with(form, replace(file, value=data)), audio),  # file twice
        st.builds(lambda v: _with(form, Part("model", v)), st.sampled_from(["m2", "whisper-1"])),
        st.builds(lambda n, v: _with(form, Part(n, v)), ONE_LINE, ODD_TEXT),  # one of its own
        st.sampled_from(list(FIELD_VALUES)).flatmap(
            lambda name: FIELD_VALUES[name].map(lambda v: _set(form, Part(name, v)))),
        st.builds(lambda data: _set(form, replace(file, value=data)), audio),
        st.builds(lambda ct: _set(form, replace(file, content_type=ct)),
                  st.sampled_from(["text/plain", "application/json", "video/mp4", "audio/x"])),
        st.builds(lambda name: _set(form, replace(file, filename=name)),
                  st.sampled_from(["", "../../etc/passwd", "a\u202eVAW.exe", "x" * 300])),
        st.just(_set(form, Part("file", file.value))),  # a plain field, no filename
        st.sampled_from(ENVELOPES).map(lambda e: replace(form, envelope=e)),
    )
    return changed.map(lambda f: replace(f, changes=form.changes + 1))


forms = st.one_of(
    st.just(VALID),
    st.just(VALID).flatmap(change),
    st.just(VALID).flatmap(change).flatmap(change),
)

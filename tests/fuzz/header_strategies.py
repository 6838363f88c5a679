"""Hypothesis strategies of ingest headers (``IngestAudioHeaders``) ingest must refuse:
a required header missing, an id that breaks the id rule (odd unicode, huge), an option
of the wrong type or out of range, a header given twice (names differ only in case) with
two values, an object reference with a body.

Header values never hold CR or LF: a NATS client cannot send those (they would end the
header line), so no producer can."""

from __future__ import annotations

from hypothesis import strategies as st

from mumu.contracts import headers as h
from mumu.contracts.ids import is_id
from mumu.contracts.options import PROMPT_MAX_CHARS
from tests.fuzz.strategies import ODD_TEXT

REQUIRED = (h.CONTENT_TYPE, h.SESSION, h.REQUEST_ID)
ONE_LINE = ODD_TEXT.map(lambda t: "".join(c for c in t if c not in "\r\n")).filter(str.strip)


def valid_headers(request_id: str) -> dict[str, str]:
    return {h.CONTENT_TYPE: "audio/wav", h.SESSION: "s-fuzz", h.REQUEST_ID: request_id}


BAD_OPTIONS = st.one_of(
    st.tuples(st.just(h.BEAM_SIZE), st.sampled_from(["0", "21", "-1", "five", "1e9", "5.5"])),
    st.tuples(st.sampled_from([h.WORD_TIMESTAMPS, h.VAD, h.ANSWER]),
              st.sampled_from(["maybe", "2", "yes please", "nul"])),
    st.tuples(st.just(h.TASK), st.sampled_from(["summarise", "TRANSLATE!", "x" * 300])),
    st.tuples(st.just(h.LANGUAGE), st.sampled_from(["english", "EN", "e", "en-US", "\u00e9n"])),
    st.tuples(st.just(h.PROMPT), st.just("p" * (PROMPT_MAX_CHARS + 1))),
)


def invalid_ingest_headers(request_id: str) -> st.SearchStrategy[tuple[bytes, dict[str, str]]]:
    """(body, headers) ingest refuses whatever the body; ``body`` is kept small and empty
    only where the headers name an object."""
    base = valid_headers(request_id)

    def without(name: str) -> dict[str, str]:
        return {k: v for k, v in base.items() if k != name}

    def replaced(change: tuple[str, str]) -> dict[str, str]:
        return {**base, change[0]: change[1]}

    def twice(change: tuple[str, str]) -> dict[str, str]:
        name, other = change
        return {**base, name.lower(): other} if other != base[name] else {}

    bad_id = st.one_of(ONE_LINE.filter(lambda t: not is_id(t)), st.just("r" * 5000))
    headers = st.one_of(
        st.sampled_from(REQUIRED).map(without),
        st.tuples(st.sampled_from([h.SESSION, h.REQUEST_ID]), bad_id).map(replaced),
        BAD_OPTIONS.map(replaced),
        st.tuples(st.sampled_from([h.SESSION, h.REQUEST_ID, h.CONTENT_TYPE]),
                  st.sampled_from(["s-other", "r-other", "audio/flac"])).map(twice)
        .filter(bool),
        st.just({**base, h.AUDIO_OBJECT: "   "}),
        st.just({**base, h.AUDIO_OBJECT: "o" * 1100}),
    )
    body = st.binary(min_size=1, max_size=64)
    return st.tuples(body, headers)

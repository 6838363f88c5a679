"""Hypothesis strategies derived from the event models: payloads a stage must refuse.

Each strategy starts from a valid event and breaks it in a way the model itself says is
wrong: a required field missing, a string field given another type, an id that breaks the
id rule (too long, odd unicode, separators), a string over its ``max_length``; or no JSON
object at all (random bytes, broken UTF-8, JSON of another shape)."""

from __future__ import annotations

import json
from typing import Any

from annotated_types import MaxLen
from hypothesis import strategies as st
from pydantic import BaseModel

from mumu.contracts.ids import is_id

NOT_A_STRING = st.one_of(
    st.integers(), st.floats(allow_nan=False), st.booleans(), st.none(),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(),
                                                         max_size=2),
)
ODD_TEXT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=300,
)
"""Any unicode: right-to-left marks, combining characters, emoji, NUL, separators."""


def _required(model: type[BaseModel]) -> list[str]:
    return [f.alias or n for n, f in model.model_fields.items() if f.is_required()]


def _strings(model: type[BaseModel]) -> list[str]:
    return [f.alias or n for n, f in model.model_fields.items()
            if f.is_required() and f.annotation is str]


def _ids(model: type[BaseModel]) -> list[str]:
    return [f.alias or n for n, f in model.model_fields.items()
            if f.annotation is str and any(getattr(m, "pattern", None) for m in f.metadata)]


def _limited(model: type[BaseModel]) -> list[tuple[str, int]]:
    return [(f.alias or n, m.max_length) for n, f in model.model_fields.items()
            for m in f.metadata if isinstance(m, MaxLen)]


def _not_an_object(data: bytes) -> bool:
    try:
        return not isinstance(json.loads(data), dict)
    except (ValueError, UnicodeDecodeError):
        return True


def invalid_events(model: type[BaseModel], valid: BaseModel) -> st.SearchStrategy[bytes]:
    """Payloads ``model`` refuses, made from ``valid``."""
    base: dict[str, Any] = json.loads(valid.model_dump_json(by_alias=True))

    def without(name: str) -> dict[str, Any]:
        return {k: v for k, v in base.items() if k != name}

    def replaced(change: tuple[str, Any]) -> dict[str, Any]:
        return {**base, change[0]: change[1]}

    broken: list[st.SearchStrategy[dict[str, Any]]] = [
        st.sampled_from(_required(model)).map(without),
        st.tuples(st.sampled_from(_strings(model)), NOT_A_STRING).map(replaced),
        st.tuples(st.sampled_from(_ids(model)), ODD_TEXT.filter(lambda t: not is_id(t)))
        .map(replaced),
    ]
    broken += [st.just(replaced((name, "x" * (limit + 1)))) for name, limit in _limited(model)]
    as_json = st.one_of(*broken).map(lambda d: json.dumps(d).encode())
    garbage = st.one_of(
        st.binary(max_size=512),
        ODD_TEXT.map(str.encode),
        st.lists(st.integers(), max_size=4).map(lambda x: json.dumps(x).encode()),
    ).filter(_not_an_object)
    return st.one_of(as_json, garbage)

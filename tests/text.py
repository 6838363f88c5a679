"""Normalisers of the transcripts the tests compare: lower-cased words, punctuation gone."""

from __future__ import annotations

import re


def words(text: str) -> list[str]:
    """Lower-cased words, punctuation stripped, apostrophes kept ("it's" is one word): the
    word error rate's normalisation."""
    return re.sub(r"[^\w\s']", " ", text.lower()).split()


def split_words(text: str) -> list[str]:
    """Lower-cased words, split at every mark, apostrophes too ("it's": "it", "s")."""
    return re.sub(r"[^\w\s]", " ", text.lower()).split()

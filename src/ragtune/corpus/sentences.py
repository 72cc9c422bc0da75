"""Cutting text into sentences, with their character offsets (so a quoted sentence can be found again)."""

from __future__ import annotations

import re
from collections.abc import Iterable

SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\"'])|\n[ \t]*\n\s*")
"""A sentence ends at . ! or ? followed by space and a capital, digit, bracket or quote ("p < 0.05" and "e.g. the"
stay whole), and at a blank line (a heading or paragraph never runs into the next one)."""


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each non-blank sentence of `text`, without its surrounding whitespace."""
    return spans_between(text, ((m.start(), m.end()) for m in SENTENCE_END.finditer(text)))


def spans_between(text: str, cuts: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """The non-blank pieces of `text` between cuts, each cut (where a piece ends, where the next begins), in order;
    each piece without its surrounding whitespace."""
    spans: list[tuple[int, int]] = []
    start = 0
    for end, next_start in [*cuts, (len(text), len(text))]:
        piece = text[start:end]
        if piece.strip():
            left = start + len(piece) - len(piece.lstrip())
            spans.append((left, left + len(piece.strip())))
        start = next_start
    return spans


def sentences(text: str) -> list[str]:
    """The sentences of `text`, line breaks inside one turned into spaces."""
    return [text[a:b].replace("\n", " ").strip() for a, b in sentence_spans(text)]

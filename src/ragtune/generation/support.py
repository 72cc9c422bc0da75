"""How well each sentence of a generated answer is supported by the passages it cites.

Each answer sentence (its `[n]` markers removed) is compared, by cosine similarity with the store's embedding
model, with every sentence of the passages it cites — of all retrieved passages when it cites none. The best match
is its supporting span; below `threshold` the sentence is marked unsupported (kept, flagged). Nothing is
downloaded: the check uses the model that ships with the store.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ragtune.corpus.sentences import sentence_spans, spans_between
from ragtune.embedding import TextEncoder
from ragtune.generation.prompts import PromptPassage

DEFAULT_SUPPORT_THRESHOLD = 0.5
"""Cosine similarity between an answer sentence and its best passage sentence below which it is unsupported. On
PubMedQA's 1,000 author-written conclusions (1,929 sentences): 86 % of sentences clear it against their own abstract,
0.3 % against another paper's (BENCHMARKS.md, bench/bench_support.py)."""
_MARKER = re.compile(r"\s*\[(\d+)\]")
_ANSWER_SENTENCE_END = re.compile(r"[.!?]((?:\s*\[\d+\])*)\s+(?=[A-Z0-9(\"'])")
"""The end of an answer sentence: its citation markers, after or before the full stop, belong to it."""


@dataclass(frozen=True)
class SentenceSupport:
    span: tuple[int, int]
    """Character offsets of the sentence in the answer text."""
    cited: tuple[int, ...]
    score: float
    passage: int | None
    """The number of the passage holding the best supporting sentence."""
    evidence_span: tuple[int, int] | None
    """Character offsets of that sentence in the passage text."""
    supported: bool

    def to_json(self, answer_text: str) -> dict[str, Any]:
        return {
            "text": answer_text[self.span[0] : self.span[1]], "span": list(self.span), "cited": list(self.cited),
            "score": round(self.score, 4), "supported": self.supported, "passage": self.passage,
            "evidence_span": list(self.evidence_span) if self.evidence_span else None,
        }  # fmt: skip


def check_support(
    answer_text: str, passages: Sequence[PromptPassage], embedder: TextEncoder,
    threshold: float = DEFAULT_SUPPORT_THRESHOLD,
) -> list[SentenceSupport]:  # fmt: skip
    """One record per sentence of `answer_text`, in order."""
    answer_spans = [s for s in answer_sentence_spans(answer_text) if _MARKER.sub("", answer_text[s[0] : s[1]]).strip()]
    if not answer_spans or not passages:
        return []
    pieces = [(p.number, span) for p in passages for span in sentence_spans(p.hit.text)]
    if not pieces:
        return [SentenceSupport(span, _cited(answer_text, span), 0.0, None, None, False) for span in answer_spans]
    texts = [_MARKER.sub("", answer_text[a:b]).strip() for a, b in answer_spans]
    by_number = {p.number: p.hit.text for p in passages}
    vectors = embedder.encode(texts + [by_number[number][a:b] for number, (a, b) in pieces])
    answer_vectors, piece_vectors = vectors[: len(texts)], vectors[len(texts) :]
    scores = answer_vectors @ piece_vectors.T
    found = []
    for row, span in enumerate(answer_spans):
        cited = _cited(answer_text, span)
        allowed = [i for i, (number, _) in enumerate(pieces) if not cited or number in cited]
        if not allowed:  # cites only passages that are not there (citation cleaning removes those)
            found.append(SentenceSupport(span, cited, 0.0, None, None, False))
            continue
        best = allowed[int(np.argmax(scores[row, allowed]))]
        score = float(scores[row, best])
        number, evidence = pieces[best]
        found.append(SentenceSupport(span, cited, score, number, evidence, score >= threshold))
    return found


def answer_sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence of an answer, a sentence's `[n]` markers inside it ("… drops. [1] Next …")."""
    return spans_between(text, ((m.end(1), m.end()) for m in _ANSWER_SENTENCE_END.finditer(text)))


def _cited(text: str, span: tuple[int, int]) -> tuple[int, ...]:
    return tuple(dict.fromkeys(int(n) for n in _MARKER.findall(text[span[0] : span[1]])))

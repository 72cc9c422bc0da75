"""Evidence for an answer: the retrieved passages' sentences that best answer the question — no generator.

An evidence answer (`Answerer(answer="extractive")`) is faithful by construction: every sentence is quoted from a
retrieved passage and cited with its passage and exact character span. Sentences are scored by cosine similarity to
the question with the store's embedding model; those below a floor are left out, near-duplicates of a better one
dropped, and the rest shown best passage first, in reading order within a passage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ragtune.corpus.sentences import sentence_spans
from ragtune.embedding import TextEncoder
from ragtune.errors import InputError
from ragtune.types import Hit

DEFAULT_MAX_SENTENCES = 3
DEFAULT_MIN_SENTENCE_SCORE = 0.3
"""Cosine similarity (store embedder) between question and sentence below which a sentence is no evidence."""
NEAR_DUPLICATE = 0.95
"""Cosine similarity between two sentences above which the lower-scored one repeats the other."""
MIN_WORDS = 4
"""Shorter pieces (headings, labels, list markers) are no evidence on their own."""


@dataclass(frozen=True)
class EvidenceSentence:
    number: int
    """The passage's number in the answer (its rank among the retrieved hits, from 1)."""
    hit: Hit
    span: tuple[int, int]
    """Character offsets of the sentence in the passage text."""
    score: float

    @property
    def text(self) -> str:
        return self.hit.text[self.span[0] : self.span[1]]


def select_evidence(
    question: str,
    hits: Sequence[Hit],
    embedder: TextEncoder,
    max_sentences: int = DEFAULT_MAX_SENTENCES,
    min_score: float = DEFAULT_MIN_SENTENCE_SCORE,
) -> list[EvidenceSentence]:
    """The best `max_sentences` sentences of `hits` for `question` (score ≥ `min_score`, no near-duplicates), in the
    order they are shown: by passage rank, then by position in the passage."""
    if max_sentences < 1:
        raise InputError(f"--max-sentences must be at least 1 (got {max_sentences})")
    candidates = [
        (number, hit, (start, end))
        for number, hit in enumerate(hits, start=1)
        for start, end in sentence_spans(hit.text)
        if _is_statement(hit.text[start:end])
    ]
    if not candidates:
        return []
    vectors = embedder.encode([hit.text[a:b] for _, hit, (a, b) in candidates])
    scores = vectors @ embedder.encode_query(question)
    chosen: list[int] = []
    for index in np.argsort(-scores, kind="stable"):
        if scores[index] < min_score or len(chosen) == max_sentences:
            break
        if any(float(vectors[index] @ vectors[other]) > NEAR_DUPLICATE for other in chosen):
            continue
        chosen.append(int(index))
    evidence = [EvidenceSentence(candidates[i][0], candidates[i][1], candidates[i][2], float(scores[i])) for i in chosen]
    return sorted(evidence, key=lambda e: (e.number, e.span[0]))


def _is_statement(sentence: str) -> bool:
    """Not a markdown heading, and at least MIN_WORDS words."""
    return not sentence.startswith("#") and len(sentence.split()) >= MIN_WORDS

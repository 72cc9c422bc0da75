"""Find `[n]` citations in an answer, drop those naming a passage that was not given, and locate the cited spans."""

from __future__ import annotations

import re
from dataclasses import dataclass

CITATION = re.compile(r"\[(\s*\d+\s*(?:[,;]\s*\d+\s*)*)\]")
_WORD = re.compile(r"[a-z0-9]{3,}")
_SENTENCE = re.compile(r"[^.!?\n]+[.!?]?")
_HOLD_LIMIT = 24
"""Characters held back while a `[` might still open a citation during streaming."""


@dataclass(frozen=True)
class CleanedText:
    text: str
    cited: list[int]
    """Valid passage numbers in order of first citation."""
    invalid: int
    """Citations removed because they named a passage number that was not in the prompt."""


def clean_citations(text: str, passage_count: int) -> CleanedText:
    """Remove citation numbers outside 1..passage_count (`[1, 9]` → `[1]`, `[9]` → ``)."""
    cited: list[int] = []
    invalid = 0

    def replace(match: re.Match[str]) -> str:
        nonlocal invalid
        kept = []
        for part in re.split(r"[,;]", match.group(1)):
            number = int(part)
            if 1 <= number <= passage_count:
                kept.append(number)
                if number not in cited:
                    cited.append(number)
            else:
                invalid += 1
        return f"[{', '.join(map(str, kept))}]" if kept else ""

    cleaned = CITATION.sub(replace, text)
    cleaned = re.sub(r"[ \t]+([.,;:!?])", r"\1", re.sub(r"[ \t]{2,}", " ", cleaned))
    return CleanedText(cleaned.strip(), cited, invalid)


class StreamingCitationFilter:
    """Applies `clean_citations` to a token stream: text is passed on at once except a possibly-open `[…`."""

    def __init__(self, passage_count: int) -> None:
        self.passage_count = passage_count
        self.pending = ""
        self.invalid = 0

    def feed(self, piece: str) -> str:
        self.pending += piece
        start = self.pending.rfind("[")
        if start >= 0 and "]" not in self.pending[start:] and len(self.pending) - start <= _HOLD_LIMIT:
            ready, self.pending = self.pending[:start], self.pending[start:]
        else:
            ready, self.pending = self.pending, ""
        return self._clean(ready)

    def flush(self) -> str:
        ready, self.pending = self.pending, ""
        return self._clean(ready)

    def _clean(self, text: str) -> str:
        if not text:
            return ""

        def replace(match: re.Match[str]) -> str:
            result = clean_citations(match.group(0), self.passage_count)
            self.invalid += result.invalid
            return result.text

        return CITATION.sub(replace, text)


def cited_span(answer: str, number: int, passage_text: str) -> tuple[int, int] | None:
    """Character span of the passage sentence that shares most words with the answer sentences citing `[number]`."""
    claims = [s for s in _SENTENCE.findall(answer) if re.search(rf"\[[^\]]*\b{number}\b[^\]]*\]", s)]
    claim_words = set(_WORD.findall(" ".join(claims).lower()))
    if not claim_words:
        return None
    best: tuple[float, int, int] | None = None
    for match in _SENTENCE.finditer(passage_text):
        words = set(_WORD.findall(match.group(0).lower()))
        if not words:
            continue
        overlap = len(words & claim_words) / len(words | claim_words)
        if overlap > 0 and (best is None or overlap > best[0]):
            best = (overlap, match.start(), match.end())
    return (best[1], best[2]) if best else None

"""Token-aware chunking: documents → passages that fit the embedding model's window.

Lengths are measured with the embedding model's own tokenizer. Windows are packed from whole paragraphs where they
fit, else whole sentences, else word-aligned token spans; a markdown heading starts a new passage once the current
one is half full. Consecutive passages share up to `overlap_tokens` tokens of trailing text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragtune.errors import InputError
from ragtune.types import Document, Passage

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

_HEADING = re.compile(r"^#{1,6}\s+\S")
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")
_MAX_BLOCK_CHARS = 64 * 1024
"""No block handed to the tokenizer is longer: a paragraph (or a line) past it is cut at a line break or a space, so
memory stays bounded whatever the line structure (a 30 MB file with no newline is read in pieces of this size)."""


@dataclass(frozen=True)
class ChunkingConfig:
    """How documents are cut. `chunk_tokens=None` means: the model's window minus its special tokens."""

    chunk_tokens: int | None = None
    overlap_tokens: int = 32

    def resolve(self, model_window: int, special_tokens: int) -> ChunkingConfig:
        """Fill in the model-dependent default and check the numbers make sense."""
        limit = model_window - special_tokens
        chunk = self.chunk_tokens if self.chunk_tokens is not None else limit
        if chunk < 16:
            raise InputError(f"--chunk-tokens {chunk} is too small: use at least 16")
        if chunk > limit:
            raise InputError(f"--chunk-tokens {chunk} exceeds the model's window ({limit} tokens after special tokens)")
        if not 0 <= self.overlap_tokens <= chunk // 2:
            raise InputError(f"--overlap {self.overlap_tokens} must be between 0 and half the chunk size ({chunk // 2})")
        return ChunkingConfig(chunk_tokens=chunk, overlap_tokens=self.overlap_tokens)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Unit:
    text: str
    tokens: int
    block: int  # units of one paragraph join with a space, of different paragraphs with a blank line


class Chunker:
    """Cuts documents into passages of at most `chunk_tokens` tokens (title included)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, config: ChunkingConfig) -> None:
        if config.chunk_tokens is None:
            raise ValueError("resolve the ChunkingConfig against the model first")
        self.tokenizer = tokenizer
        self.chunk_tokens = config.chunk_tokens
        self.overlap_tokens = config.overlap_tokens

    def count_tokens(self, texts: list[str]) -> list[int]:
        if not texts:
            return []
        encoded = self.tokenizer(texts, add_special_tokens=False, return_attention_mask=False)["input_ids"]
        return [len(ids) for ids in encoded]

    def chunk(self, doc: Document) -> Iterator[Passage]:
        title_tokens = self.count_tokens([doc.title])[0] + 1 if doc.title else 0
        budget = max(self.chunk_tokens - title_tokens, self.chunk_tokens // 2)
        fits = doc.stream_path is None and len(doc.text) <= _MAX_BLOCK_CHARS
        if fits and self.count_tokens([doc.text])[0] <= budget:
            yield self._passage(doc, 0, doc.text.strip())
            return
        blocks = _stream_blocks(doc.stream_path) if doc.stream_path else _text_blocks(doc.text)
        for ordinal, text in enumerate(self._pack(self._units(blocks, budget), budget)):
            yield self._passage(doc, ordinal, text)

    def _passage(self, doc: Document, ordinal: int, text: str) -> Passage:
        return Passage(
            id=f"{doc.id}#{ordinal}",
            doc_id=doc.id,
            ordinal=ordinal,
            title=doc.title,
            text=text,
            source=doc.source,
            metadata=doc.metadata,
        )

    def _units(self, blocks: Iterable[str], budget: int) -> Iterator[_Unit | None]:
        """Paragraph units, or sentence / token-span units of paragraphs that do not fit. `None` marks a heading."""
        for index, block in enumerate(blocks):
            is_heading = bool(_HEADING.match(block))
            if is_heading:
                yield None
            tokens = self.count_tokens([block])[0]
            if tokens <= budget:
                yield _Unit(block, tokens, index)
                continue
            sentences = [s for s in _SENTENCE_END.split(block) if s.strip()]
            for sentence, count in zip(sentences, self.count_tokens(sentences), strict=True):
                if count <= budget:
                    yield _Unit(sentence, count, index)
                else:
                    yield from (_Unit(piece, n, index) for piece, n in self._split_tokens(sentence, budget))

    def _split_tokens(self, text: str, budget: int) -> Iterator[tuple[str, int]]:
        """Cut an over-long sentence into spans of at most `budget` tokens, at word starts where possible."""
        encoding = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = encoding["offset_mapping"]
        word_ids = encoding.word_ids()
        start = 0
        while start < len(offsets):
            end = min(start + budget, len(offsets))
            if end < len(offsets):
                cut = end
                while cut > start + 1 and word_ids[cut] == word_ids[cut - 1]:
                    cut -= 1
                end = cut if cut > start + 1 else end
            piece = text[offsets[start][0] : offsets[end - 1][1]]
            yield piece, end - start
            start = end

    def _pack(self, units: Iterable[_Unit | None], budget: int) -> Iterator[str]:
        window: list[_Unit] = []
        used = 0
        heading_pending = False
        for unit in units:
            if unit is None:
                heading_pending = True
                continue
            section_break = heading_pending and used >= budget // 2
            heading_pending = False
            if window and (used + unit.tokens > budget or section_break):
                yield _join(window)
                window = [] if section_break else self._overlap_tail(window)
                used = sum(u.tokens for u in window)
                while window and used + unit.tokens > budget:
                    used -= window.pop(0).tokens
            window.append(unit)
            used += unit.tokens
        if window:
            yield _join(window)

    def _overlap_tail(self, window: list[_Unit]) -> list[_Unit]:
        """The trailing units (up to `overlap_tokens`) that the next passage repeats for context."""
        if self.overlap_tokens == 0:
            return []
        tail: list[_Unit] = []
        used = 0
        for unit in reversed(window):
            if used + unit.tokens > self.overlap_tokens:
                break
            tail.insert(0, unit)
            used += unit.tokens
        if tail:
            return tail
        last = window[-1]
        encoding = self.tokenizer(last.text, add_special_tokens=False, return_offsets_mapping=True)
        word_ids = encoding.word_ids()
        start = len(word_ids) - self.overlap_tokens
        while start < len(word_ids) - 1 and word_ids[start] == word_ids[start - 1]:
            start += 1
        piece = last.text[encoding["offset_mapping"][start][0] :]
        return [_Unit(piece, len(word_ids) - start, last.block)]


def _join(units: list[_Unit]) -> str:
    parts = [units[0].text]
    for previous, unit in zip(units, units[1:]):
        parts.append(("\n\n" if unit.block != previous.block else " ") + unit.text)
    return "".join(parts).strip()


def _normalise_block(block: str) -> str:
    return " ".join(block.split())


def _split_heading(block: str) -> list[str]:
    """A heading line glued to its paragraph becomes its own block."""
    first, _, rest = block.partition("\n")
    if _HEADING.match(first) and rest.strip():
        return [first, rest]
    return [block]


def _text_blocks(text: str) -> Iterator[str]:
    for raw in re.split(r"\n\s*\n", text):
        for block in _split_heading(raw.strip()):
            for piece in _bounded_pieces(block):
                normalised = _normalise_block(piece)
                if normalised:
                    yield normalised


def _bounded_pieces(text: str, limit: int = _MAX_BLOCK_CHARS) -> Iterator[str]:
    """`text` in pieces of at most `limit` characters, cut after the last line break or space before the limit
    (anywhere, if a piece has neither)."""
    start = 0
    while len(text) - start > limit:
        window = text[start : start + limit]
        cut = max(window.rfind("\n"), window.rfind(" "))
        end = start + (cut + 1 if cut > 0 else limit)
        yield text[start:end]
        start = end
    yield text[start:]


def _stream_blocks(path: Path) -> Iterator[str]:
    """Paragraphs of a large text file, read in lines of at most `_MAX_BLOCK_CHARS` characters (a longer line
    arrives in pieces), so memory stays bounded."""
    lines: list[str] = []
    size = 0
    carried = ""  # the word a cut line ended in: it starts the next piece instead of being split
    with path.open("r", encoding="utf-8-sig", errors="replace") as handle:  # a byte-order mark is not text
        while line := handle.readline(_MAX_BLOCK_CHARS):
            line, carried = _cut_at_space(carried + line) if not line.endswith("\n") else (carried + line, "")
            if line.strip():
                lines.append(line)
                size += len(line)
                if size < _MAX_BLOCK_CHARS:
                    continue
            if lines:
                yield from _text_blocks("".join(lines))
                lines, size = [], 0
    lines.append(carried)
    if "".join(lines).strip():
        yield from _text_blocks("".join(lines))


def _cut_at_space(piece: str) -> tuple[str, str]:
    """A piece of an over-long line → (up to its last space, the rest); the whole piece if it has no space."""
    cut = piece.rfind(" ")
    return (piece[: cut + 1], piece[cut + 1 :]) if cut > 0 else (piece, "")

from __future__ import annotations

import tracemalloc
from itertools import islice
from pathlib import Path

import pytest

from ragtune.corpus import Chunker, ChunkingConfig
from ragtune.errors import InputError
from ragtune.types import Document

SENTENCES = [f"Sentence number {i} talks about pump seal {i % 7} and impeller wear." for i in range(120)]


def _doc(text: str, title: str = "Pump manual", doc_id: str = "manual") -> Document:
    return Document(id=doc_id, title=title, text=text, source="docs/manual.txt")


def _chunker(tokenizer, chunk_tokens: int = 64, overlap: int = 16) -> Chunker:  # type: ignore[no-untyped-def]
    return Chunker(tokenizer, ChunkingConfig(chunk_tokens=chunk_tokens, overlap_tokens=overlap))


def _tokens(tokenizer, text: str) -> int:  # type: ignore[no-untyped-def]
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def test_default_fits_the_model_window(minilm_tokenizer) -> None:  # type: ignore[no-untyped-def]
    config = ChunkingConfig().resolve(model_window=256, special_tokens=2)
    assert config.chunk_tokens == 254
    with pytest.raises(InputError, match="exceeds the model's window"):
        ChunkingConfig(chunk_tokens=300).resolve(256, 2)
    with pytest.raises(InputError, match="--overlap"):
        ChunkingConfig(chunk_tokens=64, overlap_tokens=40).resolve(256, 2)


def test_short_document_stays_whole(minilm_tokenizer) -> None:  # type: ignore[no-untyped-def]
    text = "A short note.\n\nWith two paragraphs."
    [passage] = _chunker(minilm_tokenizer).chunk(_doc(text))
    assert passage.id == "manual#0" and passage.text == text


def test_passages_respect_token_budget_including_title(minilm_tokenizer) -> None:  # type: ignore[no-untyped-def]
    passages = list(_chunker(minilm_tokenizer).chunk(_doc(" ".join(SENTENCES))))
    assert len(passages) > 5
    for passage in passages:
        assert _tokens(minilm_tokenizer, passage.embedding_text()) <= 64
    assert [p.id for p in passages] == [f"manual#{i}" for i in range(len(passages))]


def test_consecutive_passages_overlap(minilm_tokenizer) -> None:  # type: ignore[no-untyped-def]
    passages = list(_chunker(minilm_tokenizer, overlap=16).chunk(_doc(" ".join(SENTENCES))))
    for previous, current in zip(passages, passages[1:]):
        shared = current.text.split(". ")[0]
        assert shared and shared in previous.text
        assert _tokens(minilm_tokenizer, shared) <= 16
    no_overlap = list(_chunker(minilm_tokenizer, overlap=0).chunk(_doc(" ".join(SENTENCES))))
    assert len(no_overlap) < len(passages)
    joined = " ".join(p.text for p in no_overlap)
    assert all(sentence in joined for sentence in SENTENCES)


def test_every_sentence_survives_and_ids_are_stable(minilm_tokenizer) -> None:  # type: ignore[no-untyped-def]
    doc = _doc("\n\n".join(" ".join(SENTENCES[i : i + 5]) for i in range(0, 120, 5)))
    first = list(_chunker(minilm_tokenizer).chunk(doc))
    second = list(_chunker(minilm_tokenizer).chunk(doc))
    assert first == second
    joined = " ".join(p.text for p in first)
    assert all(sentence in joined for sentence in SENTENCES)


def test_paragraph_boundaries_are_preferred(minilm_tokenizer) -> None:  # type: ignore[no-untyped-def]
    paragraphs = [" ".join(SENTENCES[i : i + 2]) for i in range(0, 12, 2)]
    passages = list(_chunker(minilm_tokenizer, chunk_tokens=80, overlap=0).chunk(_doc("\n\n".join(paragraphs))))
    for passage in passages:
        assert all(part in paragraphs for part in passage.text.split("\n\n"))


def test_heading_starts_a_new_passage(minilm_tokenizer) -> None:  # type: ignore[no-untyped-def]
    text = " ".join(SENTENCES[:3]) + "\n\n## Bearings\n\n" + " ".join(SENTENCES[3:5])
    passages = list(_chunker(minilm_tokenizer, chunk_tokens=64, overlap=16).chunk(_doc(text, title="")))
    assert len(passages) == 2
    assert passages[0].text == " ".join(SENTENCES[:3])
    assert passages[1].text.startswith("## Bearings\n\n")


def test_over_long_sentence_is_split_on_word_boundaries(minilm_tokenizer) -> None:  # type: ignore[no-untyped-def]
    words = [f"impeller{i}" for i in range(300)]
    passages = list(_chunker(minilm_tokenizer, chunk_tokens=32, overlap=0).chunk(_doc(" ".join(words), title="")))
    recovered = " ".join(p.text for p in passages).split()
    assert recovered == words
    assert all(_tokens(minilm_tokenizer, p.text) <= 32 for p in passages)


def test_streamed_file_uses_bounded_memory(minilm_tokenizer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "big.txt"
    paragraph = " ".join(SENTENCES[:10]) + "\n\n"
    with path.open("w") as handle:
        for _ in range(100 * 1024 * 1024 // len(paragraph) + 1):  # a 100 MB text file
            handle.write(paragraph)
    doc = Document(id="big.txt", title="big", text="", source="big.txt", stream_path=path)
    tracemalloc.start()
    passages = list(islice(_chunker(minilm_tokenizer, chunk_tokens=128).chunk(doc), 200))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(passages) == 200
    assert peak < 5 * 1024 * 1024

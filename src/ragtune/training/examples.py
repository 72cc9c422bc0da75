"""Training examples: `{"query", "positive", "negatives": [...]}` JSONL, or a BEIR dataset's labelled split."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragtune.errors import InputError
from ragtune.evaluation.dataset import BeirDataset, load_beir, subset
from ragtune.jsonl import iter_json_objects
from ragtune.store import StoreReader
from ragtune.fsutil import atomic_write_text


@dataclass(frozen=True)
class TrainingExample:
    """A query, a passage that answers it, and optionally passages that look relevant but are not."""

    query: str
    positive: str
    negatives: tuple[str, ...] = field(default_factory=tuple)
    scores: tuple[float, ...] = field(default_factory=tuple)
    """A teacher's scores of (positive, *negatives), for the distillation losses; empty when there is none."""

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"query": self.query, "positive": self.positive}
        if self.negatives:
            data["negatives"] = list(self.negatives)
        if self.scores:
            data["scores"] = list(self.scores)
        return data


def read_training_jsonl(path: str | Path) -> list[TrainingExample]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"training file '{path}' does not exist")
    examples: list[TrainingExample] = []
    for number, record in iter_json_objects(path, "'query' and 'positive'"):
        where = f"{path}:{number}"
        for key in ("query", "positive"):
            if not isinstance(record.get(key), str) or not record[key].strip():
                raise InputError(f"{where}: missing or empty '{key}' (each line needs 'query' and 'positive')")
        negatives = record.get("negatives", [])
        if not isinstance(negatives, list) or not all(isinstance(n, str) for n in negatives):
            raise InputError(f"{where}: 'negatives' must be a list of strings")
        scores = record.get("scores", [])
        if not isinstance(scores, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                   for x in scores) or (scores and len(scores) != 1 + len(negatives)):
            raise InputError(f"{where}: 'scores' must be a list of numbers, one for the positive and one per negative")
        examples.append(TrainingExample(record["query"], record["positive"], tuple(negatives),
                                        tuple(float(x) for x in scores)))
    if not examples:
        raise InputError(f"training file '{path}' holds no examples")
    return examples


def write_training_jsonl(path: str | Path, examples: Iterable[TrainingExample]) -> int:
    lines = [json.dumps(e.to_json(), ensure_ascii=False) for e in examples]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(path), "\n".join(lines) + ("\n" if lines else ""))
    return len(lines)


def beir_corpus(dataset: BeirDataset) -> dict[str, str]:
    """Document id → the text the embedder sees (title and text, as a store's passages are embedded)."""
    corpus: dict[str, str] = {}
    for _, record in iter_json_objects(dataset.corpus_path, "'_id'"):
        corpus[str(record["_id"])] = f"{record.get('title') or ''} {record.get('text') or ''}".strip()
    return corpus


def examples_from_beir(
    root: str | Path, split: str = "train", exclude_queries: Collection[str] = ()
) -> tuple[list[TrainingExample], dict[str, str]]:
    """One example per relevant (query, document) judgement of the split, leaving out the queries of
    `exclude_queries` (ids, e.g. a dev split); also returns the corpus texts."""
    dataset = load_beir(root, split)
    excluded = set(exclude_queries)
    return examples_from_dataset(subset(dataset, [q for q in dataset.queries if q not in excluded]))


def examples_from_dataset(dataset: BeirDataset) -> tuple[list[TrainingExample], dict[str, str]]:
    """One example per relevant (query, document) judgement of a loaded split; also returns the corpus texts."""
    corpus = beir_corpus(dataset)
    examples = [
        TrainingExample(dataset.queries[qid], corpus[doc_id])
        for qid, judged in dataset.qrels.items()
        for doc_id, grade in judged.items()
        if grade > 0 and doc_id in corpus
    ]
    if not examples:
        raise InputError(
            f"split '{dataset.split}' of '{dataset.root}' has no relevant judgements that point into the corpus"
        )
    return examples, corpus


def judged_document_texts(store: StoreReader, dataset: BeirDataset) -> dict[str, list[str]]:
    """Query text → the store's passages of every document judged relevant to it, for `mine_hard_negatives`'
    `never_negative`: a relevant document's other passages are no counter-examples (its positive is the whole
    document, its passages are what the store holds)."""
    relevant = {qid: [d for d, grade in judged.items() if grade > 0] for qid, judged in dataset.qrels.items()}
    texts = store.document_texts(d for docs in relevant.values() for d in docs)
    excluded: dict[str, list[str]] = {}
    for qid, docs in relevant.items():
        excluded.setdefault(dataset.queries[qid], []).extend(t for d in docs for t in texts.get(d, []))
    return excluded


def load_examples(source: str | Path, split: str = "train") -> tuple[list[TrainingExample], dict[str, str] | None]:
    """A JSONL file, or a BEIR folder (its `split`). The corpus is returned for BEIR folders."""
    path = Path(source)
    if path.is_dir():
        return examples_from_beir(path, split)
    return read_training_jsonl(path), None


def duplicate_stats(examples: Sequence[TrainingExample]) -> dict[str, int]:
    """Counts a user should know about: repeated queries, repeated (query, positive) pairs, shared positives."""
    queries = Counter(e.query for e in examples)
    pairs = Counter((e.query, e.positive) for e in examples)
    positives = Counter(e.positive for e in examples)
    return {
        "examples": len(examples),
        "unique_queries": len(queries),
        "queries_with_several_positives": sum(1 for c in queries.values() if c > 1),
        "duplicate_pairs": sum(c - 1 for c in pairs.values()),
        "positives_shared_by_queries": sum(1 for c in positives.values() if c > 1),
        "with_negatives": sum(1 for e in examples if e.negatives),
    }


def split_by_query(
    examples: Sequence[TrainingExample], dev_fraction: float, seed: int = 42
) -> tuple[list[TrainingExample], list[TrainingExample]]:
    """Hold out a fraction of the *queries* (all their examples together), so no dev query is trained on."""
    if not 0.0 < dev_fraction < 1.0:
        raise InputError(f"dev fraction {dev_fraction} must be between 0 and 1")
    queries = sorted({e.query for e in examples})
    random.Random(seed).shuffle(queries)
    dev_queries = set(queries[: max(1, round(len(queries) * dev_fraction))])
    train = [e for e in examples if e.query not in dev_queries]
    dev = [e for e in examples if e.query in dev_queries]
    if not train:
        raise InputError("too few distinct queries to hold out a dev split; add examples or pass --eval")
    return train, dev


def held_out_queries(
    dataset: BeirDataset, examples: Sequence[TrainingExample], dev_fraction: float, seed: int = 42
) -> dict[str, str]:
    """The labelled queries of `dataset` (id → text) whose `examples` `split_by_query` holds out with this fraction
    and seed: queries a labelled run kept from training, on which its choices can be made before test is read."""
    _, held = split_by_query(examples, dev_fraction, seed)
    texts = {e.query for e in held}
    return {qid: text for qid, text in dataset.queries.items() if text in texts and qid in dataset.qrels}

"""BEIR-layout datasets: `corpus.jsonl`, `queries.jsonl`, `qrels/<split>.tsv`, checked before anything runs."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ragtune.errors import InputError
from ragtune.jsonl import iter_json_objects

Qrels = dict[str, dict[str, int]]


@dataclass(frozen=True)
class BeirDataset:
    """Queries and graded judgements of one split, plus where the corpus is. Problems found while loading are
    listed in `warnings` (e.g. judgements that name unknown ids); they are reported, never silently dropped."""

    root: Path
    split: str
    corpus_path: Path
    queries: dict[str, str]
    qrels: Qrels
    corpus_ids: frozenset[str]
    has_titles: bool
    warnings: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.root.name

    def fingerprint(self) -> str:
        """Identifies the corpus content (for reusing a store built from it)."""
        digest = hashlib.sha256()
        with self.corpus_path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()[:16]


def split_queries(dataset: BeirDataset, share: float, most: int, seed: int) -> tuple[BeirDataset, BeirDataset]:
    """Hold out a random `share` of the split's queries (at least 1, at most `most`) as a `dev` split; returns
    (the rest, dev). Both keep the corpus; the rest keeps the split's name."""
    ids = sorted(dataset.queries)
    random.Random(seed).shuffle(ids)
    held = set(ids[: max(1, min(most, round(share * len(ids))))])
    if len(held) >= len(ids):
        raise InputError(f"split '{dataset.split}' of '{dataset.root}' has {len(ids)} queries: too few to hold some out")
    return subset(dataset, [q for q in dataset.queries if q not in held]), subset(dataset, held, split="dev")


def subset(dataset: BeirDataset, query_ids: Iterable[str], split: str | None = None) -> BeirDataset:
    """The same corpus with only `query_ids` (and their judgements)."""
    keep = [q for q in query_ids if q in dataset.queries]
    return replace(
        dataset, split=split or dataset.split, queries={q: dataset.queries[q] for q in keep},
        qrels={q: dataset.qrels[q] for q in keep},
    )  # fmt: skip


def available_splits(root: Path) -> list[str]:
    return sorted(p.stem for p in (root / "qrels").glob("*.tsv"))


def load_beir(root: str | Path, split: str = "test") -> BeirDataset:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise InputError(f"dataset folder '{root}' does not exist")
    corpus_path = root / "corpus.jsonl"
    queries_path = root / "queries.jsonl"
    qrels_path = root / "qrels" / f"{split}.tsv"
    for needed in (corpus_path, queries_path):
        if not needed.is_file():
            raise InputError(f"'{needed}' is missing: a BEIR dataset needs corpus.jsonl, queries.jsonl and qrels/")
    if not qrels_path.is_file():
        splits = ", ".join(available_splits(root)) or "none"
        raise InputError(f"no qrels for split '{split}' ('{qrels_path}' is missing); available splits: {splits}")

    corpus_ids, has_titles = _scan_corpus(corpus_path)
    all_queries = _read_queries(queries_path)
    qrels = _read_qrels(qrels_path)
    if not qrels:
        raise InputError(f"'{qrels_path}' has no judgements")

    warnings: list[str] = []
    unknown_queries = sorted(q for q in qrels if q not in all_queries)
    if unknown_queries:
        warnings.append(
            f"{len(unknown_queries)} judged query ids are not in queries.jsonl (e.g. {', '.join(unknown_queries[:5])}); "
            "those queries are left out"
        )
    unknown_docs = sorted({d for judged in qrels.values() for d in judged if d not in corpus_ids})
    if unknown_docs:
        warnings.append(
            f"{len(unknown_docs)} judged document ids are not in corpus.jsonl (e.g. {', '.join(unknown_docs[:5])}); "
            "they count as relevant but can never be retrieved"
        )
    empty = sorted(q for q in qrels if q in all_queries and not all_queries[q].strip())
    if empty:
        raise InputError(
            f"{len(empty)} queries of split '{split}' have empty text in {queries_path} (e.g. {', '.join(empty[:5])})"
        )
    queries = {q: all_queries[q] for q in qrels if q in all_queries}
    if not queries:
        raise InputError(f"none of the {len(qrels)} judged queries of split '{split}' are in {queries_path}")
    return BeirDataset(
        root=root,
        split=split,
        corpus_path=corpus_path,
        queries=queries,
        qrels={q: qrels[q] for q in queries},
        corpus_ids=frozenset(corpus_ids),
        has_titles=has_titles,
        warnings=warnings,
    )


def _json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, record in iter_json_objects(path, "'_id'"):
        if "_id" not in record:
            raise InputError(f"{path}:{number}: expected a JSON object with '_id'")
        yield number, record


def _scan_corpus(path: Path) -> tuple[set[str], bool]:
    ids: set[str] = set()
    has_titles = False
    for _, record in _json_lines(path):
        ids.add(str(record["_id"]))
        has_titles = has_titles or bool(str(record.get("title") or "").strip())
    if not ids:
        raise InputError(f"'{path}' holds no documents")
    return ids, has_titles


def _read_queries(path: Path) -> dict[str, str]:
    queries: dict[str, str] = {}
    for number, record in _json_lines(path):
        text = record.get("text")
        if not isinstance(text, str):
            raise InputError(f"{path}:{number}: query '{record['_id']}' has no 'text'")
        queries[str(record["_id"])] = text
    if not queries:
        raise InputError(f"'{path}' holds no queries")
    return queries


def _read_qrels(path: Path) -> Qrels:
    """`query-id<TAB>corpus-id<TAB>score`, header optional; graded scores allowed (0 = judged not relevant)."""
    qrels: Qrels = {}
    with path.open("r", encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            parts = line.rstrip("\n\r").split("\t")
            if number == 1 and parts[0].strip().lower() in ("query-id", "query_id", "qid"):
                continue
            if len(parts) == 4:  # TREC qrels: qid iteration docid score
                parts = [parts[0], parts[2], parts[3]]
            if len(parts) != 3:
                raise InputError(
                    f"{path}:{number}: expected 'query-id<TAB>corpus-id<TAB>score', got {len(parts)} fields"
                )
            qid, did, score = (p.strip() for p in parts)
            try:
                grade = int(float(score))
            except ValueError:
                raise InputError(f"{path}:{number}: relevance '{score}' is not a number") from None
            qrels.setdefault(qid, {})[did] = grade
    return qrels

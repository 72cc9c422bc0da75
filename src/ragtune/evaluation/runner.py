"""Run every (model × mode) system on a BEIR dataset and score it at document level."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragtune.corpus import ChunkingConfig
from ragtune.evaluation.dataset import BeirDataset
from ragtune.evaluation.metrics import DEFAULT_METRICS, Run, mean_scores, per_query_scores
from ragtune.evaluation.significance import PairedComparison, compare
from ragtune.fsutil import waiting_lock
from ragtune.models import resolve_model
from ragtune.paths import cache_root
from ragtune.retrieval import Reranker, Retriever, SearchMode, SearchSettings
from ragtune.store import index_sources, is_postgres_address, named_store, open_store
from ragtune.types import Hit


@dataclass(frozen=True)
class SystemResult:
    label: str
    model: str
    mode: str
    metrics: dict[str, float]
    per_query: dict[str, dict[str, float]]
    run: Run
    store: str
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Evaluation:
    dataset: str
    split: str
    queries: int
    k: int
    systems: list[SystemResult]
    comparisons: dict[str, list[PairedComparison]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)


def default_cache_dir() -> Path:
    """Where evaluation stores are kept: `<cache root>/eval-stores` (see `ragtune.paths`)."""
    return cache_root() / "eval-stores"


def documents_run(hits_per_query: dict[str, list[Hit]]) -> Run:
    """Passage hits → document scores, a document scoring its best passage (BEIR scores long documents so)."""
    run: Run = {}
    for qid, hits in hits_per_query.items():
        scores: dict[str, float] = {}
        for hit in hits:
            if hit.doc_id not in scores or hit.score > scores[hit.doc_id]:
                scores[hit.doc_id] = hit.score
        run[qid] = scores
    return run


def eval_store_dir(
    cache_dir: Path | str, dataset: BeirDataset, model_revision: str, chunking: ChunkingConfig
) -> Path | str:
    """Stores are reused when dataset content, model weights and chunking are all the same. `cache_dir` is a folder
    (a store directory each) or a postgresql:// address (a store schema each)."""
    tokens = chunking.chunk_tokens if chunking.chunk_tokens is not None else "auto"
    name = f"{dataset.name}-{dataset.fingerprint()}-{model_revision}-c{tokens}-o{chunking.overlap_tokens}"
    if is_postgres_address(cache_dir):
        return named_store(str(cache_dir), "eval_" + hashlib.sha256(name.encode()).hexdigest()[:24])
    return Path(cache_dir) / name


def _build_lock(store: Path | str) -> Path:
    """The lock file that evaluations take while they build or update `store`, an evaluation store that any of them
    may share (kept in the local cache, so that the stores' folder holds stores only)."""
    folder = cache_root() / "eval-store-locks"
    folder.mkdir(parents=True, exist_ok=True)
    key = str(store.resolve()) if isinstance(store, Path) else store
    return folder / (hashlib.sha256(key.encode()).hexdigest()[:24] + ".lock")


@dataclass(frozen=True)
class SystemSpec:
    """One system to score: the store of `model` searched with `settings` (BM25 does not use the model)."""

    model: str
    settings: SearchSettings
    label: str


def system_label(model_name: str, settings: SearchSettings) -> str:
    """`bm25`, `minilm:dense`, `minilm:hybrid` (RRF k=60, the default) or e.g. `minilm:hybrid convex 0.30`."""
    if settings.mode is SearchMode.bm25:
        return "bm25"
    default = SearchSettings(mode=settings.mode)
    name = f"{_short(model_name)}:{settings.mode.value}"
    return name if settings == default or settings.mode is SearchMode.dense else f"{name} {settings.fusion_label}"


def evaluate_systems(
    dataset: BeirDataset,
    models: Sequence[str] = ("minilm",),
    modes: Sequence[SearchMode | str] = (SearchMode.bm25, SearchMode.dense, SearchMode.hybrid),
    k: int = 100,
    cache_dir: Path | str | None = None,
    chunking: ChunkingConfig | None = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    show_progress: bool | None = None,
    reranker: str | Path | None = None,
    rerank_depth: int = 20,
    rerank_weight: float = 1.0,
    extra: Sequence[SystemSpec] = (),
) -> Evaluation:
    """Score each (model × mode) system (hybrid = RRF k=60), then the `extra` systems; the first system is the
    baseline every other one is compared with.

    BM25 does not depend on the embedding model, so it runs once (on the first model's store). With a `reranker`,
    each system is also scored with its top `rerank_depth` candidates re-ranked (label suffix `+rerank`), the
    cross-encoder's score weighted by `rerank_weight` (see `Reranker`).
    """
    modes = [SearchMode(m) for m in modes]
    specs: list[SystemSpec] = []
    for model_name in models:
        for mode in modes:
            settings = SearchSettings(mode=mode)
            if not (mode is SearchMode.bm25 and any(s.settings.mode is SearchMode.bm25 for s in specs)):
                specs.append(SystemSpec(model_name, settings, system_label(model_name, settings)))
    specs += [spec for spec in extra if spec.label not in {s.label for s in specs}]
    evaluation = evaluate_specs(
        dataset, specs, k=k, cache_dir=cache_dir, chunking=chunking, metrics=metrics, show_progress=show_progress,
        reranker=reranker, rerank_depth=rerank_depth, rerank_weight=rerank_weight,
    )  # fmt: skip
    evaluation.settings["modes"] = [m.value for m in modes]
    return evaluation


def evaluate_specs(
    dataset: BeirDataset,
    specs: Sequence[SystemSpec],
    k: int = 100,
    cache_dir: Path | str | None = None,
    chunking: ChunkingConfig | None = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    show_progress: bool | None = None,
    reranker: str | Path | None = None,
    rerank_depth: int = 20,
    rerank_weight: float = 1.0,
) -> Evaluation:
    """Score each system, in order; each model's store is indexed (or reused) once. The first is the baseline."""
    cross_encoder = Reranker(reranker, weight=rerank_weight) if reranker else None
    cache_dir = cache_dir or default_cache_dir()
    chunking = chunking or ChunkingConfig()
    query_ids = list(dataset.queries)
    query_texts = [dataset.queries[q] for q in query_ids]
    variants = [("", None)] + ([("+rerank", cross_encoder)] if cross_encoder is not None else [])
    encoding: dict[str, dict[str, float]] = {}
    results: dict[str, list[SystemResult]] = {}
    for model_name in dict.fromkeys(spec.model for spec in specs):
        model = resolve_model(model_name)
        store_dir = eval_store_dir(cache_dir, dataset, model.revision, chunking)
        with waiting_lock(_build_lock(store_dir)):  # another evaluation building this store: wait, then reuse it
            indexed = index_sources(
                store_dir, [dataset.corpus_path], model=model_name, chunking=chunking, show_progress=show_progress
            )
        encoding[model_name] = {"encoded": indexed.encoded, "encode_seconds": round(indexed.encode_seconds, 1)}
        with open_store(store_dir) as store:
            for spec in (s for s in specs if s.model == model_name):
                for suffix, rescorer in variants:
                    retriever = Retriever(
                        store, fusion=spec.settings.fusion, rrf_k=spec.settings.rrf_k, alpha=spec.settings.alpha,
                        depth=max(k, 100), reranker=rescorer, rerank_depth=rerank_depth, mode=spec.settings.mode,
                    )  # fmt: skip
                    run = documents_run(dict(zip(query_ids, retriever.search_many(query_texts, k=k))))
                    per_query = per_query_scores(dataset.qrels, run, metrics)
                    results.setdefault(spec.label, []).append(
                        SystemResult(
                            label=spec.label + suffix, model=model_name if spec.settings.mode is not SearchMode.bm25
                            else "-", mode=spec.settings.mode.value, metrics=mean_scores(per_query),
                            per_query=per_query, run=run, store=str(store_dir), settings=spec.settings.to_json(),
                        )
                    )  # fmt: skip
    systems = [result for spec in specs for result in results[spec.label]]
    comparisons = {
        system.label: [compare(m, systems[0].per_query[m], system.per_query[m]) for m in metrics]
        for system in systems[1:]
    }
    settings = {
        "models": list(dict.fromkeys(spec.model for spec in specs)),
        "modes": list(dict.fromkeys(spec.settings.mode.value for spec in specs)), "k": k, "metrics": list(metrics),
        "chunking": chunking.to_json(), "scoring": "document = max over its passages",
        "fusion": "rrf k=60 unless the label says otherwise",
        "dataset_fingerprint": dataset.fingerprint(), "encoding": encoding,
        "reranker": str(reranker) if reranker else None, "rerank_depth": rerank_depth if reranker else None,
        "rerank_weight": rerank_weight if reranker else None,
    }  # fmt: skip
    return Evaluation(
        dataset=str(dataset.root), split=dataset.split, queries=len(query_ids), k=k, systems=systems,
        comparisons=comparisons, warnings=list(dataset.warnings), settings=settings,
    )  # fmt: skip


def _short(model_name: str) -> str:
    path = Path(model_name)
    return path.name if path.name and (os.sep in model_name or path.exists()) else model_name

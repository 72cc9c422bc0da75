"""Search a store by meaning (dense), by keyword (BM25) or both (hybrid fusion)."""

from __future__ import annotations

from collections.abc import Sequence

from ragtune.errors import InputError
from ragtune.retrieval.fusion import convex_combination, reciprocal_rank_fusion
from ragtune.retrieval.rerank import Reranker
from ragtune.retrieval.settings import Fusion, SearchMode, SearchSettings
from ragtune.store.protocol import StoreReader
from ragtune.types import Hit

DEFAULT_DEPTH = 100
DEFAULT_RERANK_DEPTH = 20


class Retriever:
    """Runs queries against one opened store. Hybrid fuses the top `depth` of each list.

    `alpha` is the dense weight of the convex combination (BM25 gets 1 − alpha); `rrf_k` the RRF constant. Mode,
    fusion, alpha and rrf_k left as None take the store's recorded search settings (`store_search_settings`), or
    the defaults (hybrid, RRF k=60) where none are recorded. With a `reranker`, the top `rerank_depth` candidates
    are re-scored by the cross-encoder.
    """

    def __init__(
        self,
        store: StoreReader,
        fusion: Fusion | None = None,
        rrf_k: int | None = None,
        alpha: float | None = None,
        depth: int = DEFAULT_DEPTH,
        reranker: Reranker | None = None,
        rerank_depth: int = DEFAULT_RERANK_DEPTH,
        mode: SearchMode | None = None,
    ) -> None:
        recorded = store_search_settings(store)
        settings = SearchSettings(
            mode=SearchMode(mode) if mode is not None else recorded.mode,
            fusion=Fusion(fusion) if fusion is not None else recorded.fusion,
            alpha=alpha if alpha is not None else recorded.alpha,
            rrf_k=rrf_k if rrf_k is not None else recorded.rrf_k,
        )
        if not 0.0 <= settings.alpha <= 1.0:
            raise InputError(f"--alpha {settings.alpha} must be within [0, 1]")
        if settings.rrf_k < 0 or depth < 1 or rerank_depth < 1:
            raise InputError("--rrf-k must be ≥ 0, the fusion depth and --rerank-depth ≥ 1")
        self.store = store
        self.settings = settings
        self.depth = depth
        self.reranker = reranker
        self.rerank_depth = rerank_depth

    def search(
        self, query: str, k: int = 10, mode: SearchMode | str | None = None, filters: Sequence[tuple[str, str]] = ()
    ) -> list[Hit]:
        return self.search_many([query], k=k, mode=mode, filters=filters)[0]

    def search_many(
        self,
        queries: Sequence[str],
        k: int = 10,
        mode: SearchMode | str | None = None,
        filters: Sequence[tuple[str, str]] = (),
    ) -> list[list[Hit]]:
        """Search several queries at once (query encoding is batched); `mode` None = this retriever's mode."""
        mode = SearchMode(mode) if mode is not None else self.settings.mode
        if k < 1:
            raise InputError(f"k must be at least 1 (got {k})")
        for query in queries:
            if not query.strip():
                raise InputError("the query is empty or only whitespace: give words to search for")
        final_k = k
        if self.reranker is not None:
            k = max(k, self.rerank_depth)
        depth = max(self.depth, k)
        if mode is SearchMode.bm25:
            ranked = self.store.keyword_search(queries, k, filters)
        else:
            vectors = self.store.embedder.encode(list(queries))
            dense = self.store.dense_search(vectors, k if mode is SearchMode.dense else depth, filters)
            if mode is SearchMode.dense:
                ranked = dense
            else:
                keyword = self.store.keyword_search(queries, depth, filters)
                ranked = [self._fuse(d, b)[:k] for d, b in zip(dense, keyword, strict=True)]
        results = [self.store.hits(r) for r in ranked]
        if self.reranker is not None:
            results = self.reranker.rerank_many(queries, results, self.rerank_depth)
        return [hits[:final_k] for hits in results]

    def _fuse(self, dense: list[tuple[int, float]], keyword: list[tuple[int, float]]) -> list[tuple[int, float]]:
        if self.settings.fusion is Fusion.rrf:
            return reciprocal_rank_fusion([[i for i, _ in dense], [i for i, _ in keyword]], k=self.settings.rrf_k)
        return convex_combination(dense, keyword, weight=self.settings.alpha)


def store_search_settings(store: StoreReader) -> SearchSettings:
    """The search settings recorded in the store's manifest (see `record_search_settings`), or the defaults."""
    return SearchSettings.from_json(store.manifest.search, f"store '{store.address}'")

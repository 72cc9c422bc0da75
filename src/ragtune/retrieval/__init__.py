"""Dense, keyword and hybrid retrieval over a store."""

from ragtune.retrieval.filters import parse_filters
from ragtune.retrieval.fusion import convex_combination, reciprocal_rank_fusion
from ragtune.retrieval.rerank import Reranker, min_max_normalised
from ragtune.retrieval.retriever import Retriever, store_search_settings
from ragtune.retrieval.settings import Fusion, SearchMode, SearchSettings

__all__ = [
    "Fusion", "Reranker", "Retriever", "SearchMode", "SearchSettings", "convex_combination", "parse_filters",
    "min_max_normalised", "reciprocal_rank_fusion", "store_search_settings",
]  # fmt: skip

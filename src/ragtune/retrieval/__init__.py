"""Dense, keyword and hybrid retrieval over a store."""

from ragtune.retrieval.filters import parse_filters
from ragtune.retrieval.fusion import convex_combination, reciprocal_rank_fusion
from ragtune.retrieval.rerank import Reranker
from ragtune.retrieval.retriever import Fusion, Retriever, SearchMode

__all__ = ["Fusion", "Reranker", "Retriever", "SearchMode", "convex_combination", "parse_filters", "reciprocal_rank_fusion"]

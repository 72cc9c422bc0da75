"""A LlamaIndex retriever over a ragtune store: `RagtuneLlamaIndexRetriever(store, k=5).retrieve("question")` gives
`NodeWithScore`s (text, score, passage/doc id, title, source and the passage's metadata)."""

from __future__ import annotations

from typing import Any

from ragtune.errors import missing_dependency
from ragtune.integrations import INSTALL_HINT, HitSource, hit_metadata

try:
    from llama_index.core.base.base_retriever import BaseRetriever
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
except ImportError as exc:  # pragma: no cover - depends on the extra being installed
    raise missing_dependency("llama-index-core", INSTALL_HINT) from exc


class RagtuneLlamaIndexRetriever(BaseRetriever):
    """`store`: an open `StoreReader` or an address; other keywords as `HitSource` (k, mode, filters, reranker,
    rerank_depth)."""

    def __init__(self, store: Any, **settings: Any) -> None:
        self._source = HitSource(store, **settings)
        super().__init__()

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return [
            NodeWithScore(node=TextNode(id_=hit.id, text=hit.text, metadata=hit_metadata(hit)), score=hit.score)
            for hit in self._source.search(query_bundle.query_str)
        ]

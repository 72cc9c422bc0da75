"""Retrievers for the frameworks users already work in, over a ragtune store: `RagtuneLlamaIndexRetriever`
(llama-index-core's `BaseRetriever`) and `RagtuneLangChainRetriever` (langchain-core's `BaseRetriever`). Each is
imported from its own module, so one framework does not need the other:

    from ragtune.integrations.llamaindex import RagtuneLlamaIndexRetriever
    from ragtune.integrations.langchain import RagtuneLangChainRetriever

Install them with `pip install 'ragtune[integrations]'`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ragtune.retrieval import Reranker, Retriever, SearchMode
from ragtune.store import StoreReader, open_store
from ragtune.types import Hit

INSTALL_HINT = "'ragtune[integrations]'"


@dataclass
class HitSource:
    """What both adapters share: a store (opened here from an address, or given open), a retriever over it with
    the store's recorded search settings unless `mode` says otherwise, fixed filters and an optional reranker."""

    store: StoreReader | str | Path
    k: int = 10
    mode: SearchMode | str | None = None
    filters: Sequence[tuple[str, str]] = ()
    reranker: str | Path | Reranker | None = None
    rerank_depth: int = 20
    _retriever: Retriever | None = field(default=None, init=False, repr=False)

    def retriever(self) -> Retriever:
        if self._retriever is None:
            store = self.store if not isinstance(self.store, str | Path) else open_store(self.store)
            reranker = Reranker(self.reranker) if isinstance(self.reranker, str | Path) else self.reranker
            self._retriever = Retriever(store, reranker=reranker, rerank_depth=self.rerank_depth)
        return self._retriever

    def search(self, query: str) -> list[Hit]:
        return self.retriever().search(query, k=self.k, mode=self.mode, filters=list(self.filters))


def hit_metadata(hit: Hit) -> dict[str, object]:
    """The fields a framework's node/document carries besides the text."""
    return {"passage_id": hit.id, "doc_id": hit.doc_id, "title": hit.title, "source": hit.source, **hit.metadata}

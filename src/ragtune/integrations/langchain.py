"""A LangChain retriever over a ragtune store: `RagtuneLangChainRetriever(store=..., k=5).invoke("question")` gives
`Document`s (page_content, metadata with score, passage/doc id, title, source and the passage's metadata); it is a
Runnable, so it composes with `|` like any LangChain retriever."""

from __future__ import annotations

from typing import Any

from ragtune.errors import missing_dependency
from ragtune.integrations import INSTALL_HINT, HitSource, hit_metadata

try:
    from langchain_core.callbacks import CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever
    from pydantic import ConfigDict, PrivateAttr
except ImportError as exc:  # pragma: no cover - depends on the extra being installed
    raise missing_dependency("langchain-core", INSTALL_HINT) from exc


class RagtuneLangChainRetriever(BaseRetriever):
    """Fields: `store` (an open `StoreReader` or an address), `k`, `mode`, `filters`, `reranker`, `rerank_depth`."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    store: Any
    k: int = 10
    mode: str | None = None
    filters: list[tuple[str, str]] = []
    reranker: Any = None
    rerank_depth: int = 20
    _source: HitSource = PrivateAttr()

    def model_post_init(self, context: Any) -> None:
        self._source = HitSource(self.store, self.k, self.mode, self.filters, self.reranker, self.rerank_depth)

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        return [
            Document(page_content=hit.text, metadata={"score": hit.score, **hit_metadata(hit)}, id=hit.id)
            for hit in self._source.search(query)
        ]

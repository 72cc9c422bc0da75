"""The LlamaIndex and LangChain retrievers, each in a small pipeline of the real library."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import rel

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    from conftest import write_docs
    from ragtune.store import index_sources

    root = tmp_path_factory.mktemp("integrations")
    index_sources(root / "store", [write_docs(root / "docs")], show_progress=False)
    return str(root / "store")


def test_llamaindex_pipeline_retrieves_nodes_with_scores_and_metadata(store: str) -> None:
    from llama_index.core.postprocessor import SimilarityPostprocessor
    from llama_index.core.schema import NodeWithScore, QueryBundle

    from ragtune.integrations.llamaindex import RagtuneLlamaIndexRetriever

    retriever = RagtuneLlamaIndexRetriever(store, k=3, mode="dense")
    nodes = retriever.retrieve("what damages a pump impeller?")
    assert all(isinstance(n, NodeWithScore) for n in nodes) and len(nodes) == 3
    top = nodes[0]
    assert rel(top.node.metadata["doc_id"]) == "docs/guide/pumps.md" and "Cavitation" in top.node.get_content()
    assert top.score == pytest.approx(max(n.score for n in nodes)) and top.node.node_id == top.node.metadata["passage_id"]
    kept = SimilarityPostprocessor(similarity_cutoff=top.score - 1e-6).postprocess_nodes(
        nodes, query_bundle=QueryBundle("what damages a pump impeller?"))  # a framework step on our nodes
    assert [n.node.node_id for n in kept] == [top.node.node_id]
    filtered = RagtuneLlamaIndexRetriever(store, k=3, filters=[("source", "docs/notes")]).retrieve("water")
    assert filtered and all(rel(n.node.metadata["source"]).startswith("docs/notes/") for n in filtered)


def test_langchain_chain_retrieves_documents_with_scores_and_metadata(store: str) -> None:
    from langchain_core.documents import Document
    from langchain_core.runnables import RunnableLambda

    from ragtune.integrations.langchain import RagtuneLangChainRetriever
    from ragtune.store import open_store

    with open_store(store) as opened:  # an open store, shared with the caller
        retriever = RagtuneLangChainRetriever(store=opened, k=2, mode="hybrid")
        documents = retriever.invoke("how do I close a gate valve?")
        assert all(isinstance(d, Document) for d in documents) and len(documents) == 2
        assert rel(documents[0].metadata["doc_id"]) == "docs/guide/valves.txt"
        assert documents[0].metadata["score"] >= documents[1].metadata["score"]

        def context(docs: list[Document]) -> str:
            return "\n".join(f"[{i + 1}] {Path(d.metadata['source']).name}: {d.page_content}" for i, d in enumerate(docs))

        chain = retriever | RunnableLambda(context)  # LCEL composition, as in a RAG chain
        text = chain.invoke("sourdough bread baking temperature")
        assert text.startswith("[1] cooking.txt: Bake the sourdough bread")

"""ragtune: domain-tuned retrieval-augmented generation.

The public API is what the README's "Python API" section shows (a test runs that example): index and open a store,
search it, fine-tune the embedding model, evaluate base against tuned. Everything else lives in the subpackages
(`ragtune.store`, `ragtune.retrieval`, `ragtune.training`, `ragtune.evaluation`, `ragtune.generation`,
`ragtune.integrations`); the `ragtune` command is a thin shell over them. Names load on first use, so
`import ragtune` stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_HOMES = {
    "index_sources": "ragtune.store",
    "open_store": "ragtune.store",
    "Retriever": "ragtune.retrieval",
    "load_examples": "ragtune.training.examples",
    "FinetuneConfig": "ragtune.training.finetune",
    "finetune": "ragtune.training.finetune",
    "load_beir": "ragtune.evaluation",
    "evaluate_systems": "ragtune.evaluation",
}

__all__ = [
    "FinetuneConfig",
    "Retriever",
    "evaluate_systems",
    "finetune",
    "index_sources",
    "load_beir",
    "load_examples",
    "open_store",
]

if TYPE_CHECKING:
    from ragtune.evaluation import evaluate_systems, load_beir
    from ragtune.retrieval import Retriever
    from ragtune.store import index_sources, open_store
    from ragtune.training.examples import load_examples
    from ragtune.training.finetune import FinetuneConfig, finetune


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'ragtune' has no attribute {name!r}")
    value = getattr(import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])

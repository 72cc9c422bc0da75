"""Encoder backends behind one protocol: the model's forward pass over a batch of texts, in torch or OpenVINO.

`Embedder` (ragtune.embedding) picks one by name (`make_encoder`) and normalises what it returns. The OpenVINO
backend runs the same sentence-transformers model (transformer + its pooling, whatever that is), converted once per
model revision into OpenVINO's format under the ragtune cache folder; on CPUs with AMX/AVX512-BF16 it runs bf16
matrix products with float32 accumulation and keeps layer norms and softmax in float32 (bench/bench_encode.py).
"""

from __future__ import annotations

import os
import threading
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from ragtune.child_process import exited
from ragtune.errors import RagtuneError, missing_dependency
from ragtune.fsutil import free_space_text, waiting_lock
from ragtune.model_copies import bound_after_saving, copies_in_use, mark_used
from ragtune.models import ModelRef
from ragtune.paths import model_copies_root

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

BACKENDS = ("torch", "openvino")
BACKEND_ENV = "RAGTUNE_ENCODER"
_OPENVINO_BATCH = 16
"""Texts per OpenVINO request, after sorting by length: small batches waste little on padding."""
_OPENVINO_LENGTH_STEP = 16
"""Requests are padded to a multiple of this many tokens: the CPU plugin keeps state per input shape, and a server
that batches concurrent queries would otherwise meet a new (rows, length) shape at every turn and grow."""


class Encoder(Protocol):
    name: str

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """float32 vectors, one row per text (not necessarily unit length)."""
        ...


def encoder_backend(
    requested: str | None = None, purpose: str = "documents", measure: Callable[[], str] | None = None
) -> str:
    """`requested`, else $RAGTUNE_ENCODER, else by what is measured faster: OpenVINO for queries (one short text at a
    time: hybrid search p50 18.9 ms against torch's 23.0 ms); for documents `measure()` where given (the faster one
    on this machine, `backend_choice`), else torch. Torch where OpenVINO is not installed."""
    choice = (requested or os.environ.get(BACKEND_ENV) or "auto").lower()
    if choice == "auto":
        try:
            import openvino  # noqa: F401
        except ImportError:
            return "torch"
        if purpose == "queries":
            return "openvino"
        return measure() if measure is not None else "torch"
    if choice not in BACKENDS:
        raise RagtuneError(f"encoder '{choice}' is not one of {', '.join(BACKENDS)} (or auto)")
    return choice


def make_encoder(
    backend: str, model: SentenceTransformer, ref: ModelRef, precision: str, batch_size: int,
    int8_calibration: Sequence[str] = (),
) -> Encoder:
    """`int8_calibration` (OpenVINO only): quantize the model to int8 on these texts (`ragtune.query_quantization`);
    the operations left in floating point then run in float32, and `precision` is that of the float model the int8
    one is checked against."""
    if backend == "torch":
        if int8_calibration:
            raise RagtuneError(f"int8 encoding runs in OpenVINO, not torch: unset {BACKEND_ENV} or set it to openvino")
        return TorchEncoder(model, batch_size, tokenize_ahead=str(model.device).startswith("cuda"))
    if backend == "openvino":
        return OpenVinoEncoder(model, ref, precision, int8_calibration)
    raise RagtuneError(f"encoder '{backend}' is not one of {', '.join(BACKENDS)}")


TOKENIZER_THREADS_AT_MOST = 8


def tokenizer_threads() -> int:
    """Threads that tokenize ahead of a GPU: the cores this process may use, one left for the thread that drives
    the GPU. The fast tokenizer releases the GIL while it tokenizes (TOKENIZERS_PARALLELISM is off, ragtune's
    default), so batches tokenize side by side."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(TOKENIZER_THREADS_AT_MOST, cores - 1))


class TorchEncoder:
    """The loaded torch model (bf16 on a CPU: linear layers packed, `ragtune.linear_packing`) on length-sorted
    batches, as sentence-transformers' `encode` runs it. With
    `tokenize_ahead` (on a GPU) `tokenizer_threads` threads tokenize the next batches while the device runs this
    one: a model as small as MiniLM does a batch's arithmetic on a GPU in a fraction of the time one CPU core takes
    to tokenize it (bench/bench_encode_cuda.py)."""

    name = "torch"

    def __init__(
        self, model: SentenceTransformer, batch_size: int, tokenize_ahead: bool = False, threads: int | None = None
    ) -> None:
        self.model = model
        self.batch_size = batch_size
        self.tokenize_ahead = tokenize_ahead
        self.threads = threads or tokenizer_threads()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.model.get_embedding_dimension()), dtype=np.float32)
        if self.tokenize_ahead and len(texts) > self.batch_size:  # one batch (a query) has nothing to overlap
            return self._encode_tokenizing_ahead(list(texts))
        vectors = self.model.encode(list(texts), batch_size=self.batch_size, convert_to_tensor=True,
                                    show_progress_bar=False)  # fmt: skip
        return vectors.float().cpu().numpy()

    def _features(self, batch: list[str]) -> dict[str, object]:
        """sentence-transformers' own preprocessing, as numpy arrays: building torch tensors from the tokenizer's
        lists holds the GIL several times longer than numpy's conversion does."""
        import torch

        features = self.model.preprocess(batch, processing_kwargs={"common": {"return_tensors": "np"}})
        return {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in features.items()}

    def _encode_tokenizing_ahead(self, texts: list[str]) -> np.ndarray:
        import torch
        from sentence_transformers.util import batch_to_device

        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))  # longest first, as sentence-transformers
        batches = [[texts[i] for i in order[start : start + self.batch_size]]
                   for start in range(0, len(order), self.batch_size)]  # fmt: skip
        outputs = []
        self.model.eval()
        with ThreadPoolExecutor(max_workers=self.threads) as tokenizers, torch.inference_mode():
            upcoming = iter(batches)
            pending = deque(tokenizers.submit(self._features, batch) for batch in islice(upcoming, self.threads + 1))
            while pending:
                features = pending.popleft().result()
                following = next(upcoming, None)  # at most threads + 1 batches tokenized and waiting
                if following is not None:
                    pending.append(tokenizers.submit(self._features, following))
                features = batch_to_device(features, self.model.device)
                outputs.append(self.model(features)["sentence_embedding"])
            sorted_vectors = torch.cat(outputs).float().cpu().numpy()
        vectors = np.empty_like(sorted_vectors)
        vectors[order] = sorted_vectors
        return vectors


class OpenVinoEncoder:
    """The model converted to OpenVINO IR (cached per revision), compiled for this CPU at `precision`; quantized to
    int8 on `int8_calibration` where given."""

    name = "openvino"

    def __init__(
        self, model: SentenceTransformer, ref: ModelRef, precision: str, int8_calibration: Sequence[str] = ()
    ) -> None:
        try:
            import openvino as ov
        except ImportError as exc:
            raise missing_dependency("openvino", "openvino") from exc
        self.tokenizer = model.tokenizer
        self.max_length = int(model.max_seq_length)
        self.input_names = [n for n in ("input_ids", "attention_mask", "token_type_ids")
                            if n in self.tokenizer.model_input_names]  # fmt: skip
        config = {
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
            "PERFORMANCE_HINT": "LATENCY",
        }
        threads = _torch_threads()
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        float_ir = converted_model_path(ref)
        saved = False
        with ExitStack() as held:
            try:  # a `ragtune cache prune` in another process waits until the model is compiled
                held.enter_context(copies_in_use())
            except OSError as exc:  # the cache folder cannot be made (a file in its place, say)
                raise _unwritable_copy(float_ir.parent, exc) from None
            if not float_ir.exists():
                try:
                    convert_to_openvino(ref.path, float_ir, self.input_names)
                except OSError as exc:
                    raise _unwritable_copy(float_ir.parent, exc) from None
                saved = True
            mark_used(float_ir)
            ir = float_ir
            if int8_calibration:
                from ragtune.query_quantization import INT8_CONFIG

                ir, saved_int8 = self._quantized(float_ir, int8_calibration, precision)
                saved = saved or saved_int8
                config.update(INT8_CONFIG)
            self._compiled = ov.Core().compile_model(str(ir), "CPU", config)
        if saved:
            bound_after_saving(float_ir.parent)
        self._requests = threading.local()  # an infer request serves one call at a time: one per thread

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out: np.ndarray | None = None
        for rows, inputs in self.padded_batches(texts):
            vectors = next(iter(self._request().infer(inputs).values()))
            if out is None:
                out = np.zeros((len(texts), vectors.shape[1]), dtype=np.float32)
            out[rows] = vectors
        assert out is not None
        return out

    def padded_batches(
        self, texts: Sequence[str], batch_size: int = _OPENVINO_BATCH
    ) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
        """(positions in `texts`, the model's inputs for them): texts sorted by length, each batch padded to a
        multiple of `_OPENVINO_LENGTH_STEP` tokens."""
        encoded = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)
        ids = encoded["input_ids"]
        order = np.argsort([-len(x) for x in ids], kind="stable")
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            longest = max(len(ids[i]) for i in rows)
            length = min(-(-longest // _OPENVINO_LENGTH_STEP) * _OPENVINO_LENGTH_STEP, self.max_length)  # truncated
            inputs = {name: np.zeros((len(rows), length), dtype=np.int64) for name in self.input_names}
            for k, i in enumerate(rows):
                for name in self.input_names:
                    values = encoded[name][i]
                    inputs[name][k, : len(values)] = values
            yield rows, inputs

    def _quantized(self, float_ir: Path, texts: Sequence[str], precision: str) -> tuple[Path, bool]:
        """The int8 copy quantized on `texts`, and whether it was made now."""
        from ragtune.query_quantization import (
            quantize_for_queries, quantized_model_path, require_nncf, split_calibration,
        )  # fmt: skip

        require_nncf()
        target = quantized_model_path(float_ir, texts)
        if not target.exists():
            calibrate, check = split_calibration(texts)
            try:
                quantize_for_queries(
                    float_ir, target, [inputs for _, inputs in self.padded_batches(calibrate, batch_size=1)],
                    [inputs for _, inputs in self.padded_batches(check, batch_size=1)], precision,
                )  # fmt: skip
            except OSError as exc:
                raise RagtuneError(
                    f"cannot write the int8 copy of the model to '{target.parent}' ({exc.strerror or exc}): free "
                    "space there or point $RAGTUNE_CACHE at a writable folder with room, or encode queries in bf16 or "
                    "fp32"
                ) from None
            return target, True
        return target, False

    def _request(self):  # type: ignore[no-untyped-def]
        if not hasattr(self._requests, "request"):
            self._requests.request = self._compiled.create_infer_request()
        return self._requests.request


def _unwritable_copy(folder: Path, exc: OSError) -> RagtuneError:
    return RagtuneError(
        f"cannot write the OpenVINO copy of the model to '{folder}' ({exc.strerror or exc}): free space there or point "
        f"$RAGTUNE_CACHE at a writable folder with room (the copy is as large as the model's weights), or set "
        f"{BACKEND_ENV}=torch"
    )


def converted_model_path(ref: ModelRef) -> Path:
    """Per model revision and OpenVINO release (a newer release converts again)."""
    import openvino as ov

    return model_copies_root() / ov.__version__.split("-")[0] / ref.revision / "model.xml"


def convert_to_openvino(model_dir: Path, target: Path, input_names: list[str]) -> None:
    """Trace the sentence-transformers pipeline (transformer with eager attention, pooling, any dense layers) in
    float32 and save it as OpenVINO IR, atomically (a half-written model is never picked up)."""
    import openvino as ov
    import torch
    from sentence_transformers import SentenceTransformer

    source = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True,
                                 model_kwargs={"attn_implementation": "eager"})  # fmt: skip
    source.eval()

    class Pipeline(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = source

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
        ) -> torch.Tensor:
            features = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                features["token_type_ids"] = token_type_ids
            return self.model(features)["sentence_embedding"]

    ids = torch.randint(1000, 2000, (2, 12))
    mask = torch.ones(2, 12, dtype=torch.long)
    ids[1, 7:], mask[1, 7:] = 0, 0  # padding in the example, so that masking is traced
    example = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    with torch.no_grad(), warnings.catch_warnings():
        # the tracer notes two shape tests it fixes as constants; for an encoder both hold for every input length
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        converted = ov.convert_model(Pipeline(), example_input={n: example[n] for n in input_names})
    save_model_atomically(converted, target)


PARTIAL_PREFIX = "partial-"


def save_model_atomically(model, target: Path) -> None:  # type: ignore[no-untyped-def]
    """Save an OpenVINO model as `target` (.xml + .bin) through a per-process partial name and renames under a lock,
    so a reader never picks up a half-written model, two processes saving at once leave one whole pair (the first
    one's), and the partial files of a process killed while saving are removed by the next save."""
    import openvino as ov

    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{PARTIAL_PREFIX}{os.getpid()}-{target.name}")
    try:
        ov.save_model(model, str(partial), compress_to_fp16=False)
    except (RuntimeError, OSError) as exc:  # a full disk reaches here as "basic_ios::clear: iostream error"
        partial.unlink(missing_ok=True)
        partial.with_suffix(".bin").unlink(missing_ok=True)
        raise OSError(f"OpenVINO could not save it: {exc}; {free_space_text(target.parent)} there") from exc
    with waiting_lock(target.parent / ".save.lock"):
        _remove_dead_processes_partials(target.parent)
        if target.exists():  # saved by another process meanwhile: keep its pair, never mix one .xml with another .bin
            partial.unlink()
            partial.with_suffix(".bin").unlink()
            return
        partial.with_suffix(".bin").replace(target.with_suffix(".bin"))
        partial.replace(target)


def _remove_dead_processes_partials(folder: Path) -> None:
    for leftover in folder.glob(f"{PARTIAL_PREFIX}*"):
        pid = leftover.name.removeprefix(PARTIAL_PREFIX).split("-", 1)[0]
        if exited(pid):
            leftover.unlink(missing_ok=True)


def _torch_threads() -> int | None:
    """OpenVINO uses as many threads as torch is allowed (`--threads`, `torch.set_num_threads`)."""
    import torch

    return int(torch.get_num_threads()) or None

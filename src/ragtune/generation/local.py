"""Causal language models run in-process through transformers: a local directory or a GGUF file (dequantised on load)."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from ragtune.errors import RagtuneError
from ragtune.generation.base import Message, TextStream
from ragtune.models import inference_precision, quiet_transformers
from ragtune.paths import cache_root


REPETITION_PENALTY = 1.1
"""Small models loop under greedy decoding (SmolLM2-135M repeats whole sentences); a mild penalty stops it."""


class TransformersGenerator:
    """Greedy (or sampled) chat generation with a transformers causal LM on CPU or GPU.

    Conversations are rendered with the tokenizer's chat template; a model without one gets a plain
    `role: content` transcript, so any local causal-LM directory works.
    """

    def __init__(
        self,
        path: str | Path,
        gguf_file: str | None = None,
        name: str | None = None,
        device: str | None = None,
        precision: str = "fp32",
    ):
        """`precision` fp32, bf16, or auto (bf16 where this generator's device has it, as for encoding). bf16 halves
        the weights' traffic: SmolLM2-135M writes pair questions 2.2× faster on a CPU with AMX (bench/bench_pairs.py,
        2026-12-04); answers keep fp32, in which their quality was measured."""
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        precision = inference_precision(None if precision == "auto" else precision, device=self.device)

        path = Path(path)
        if not path.is_dir():
            raise RagtuneError(f"generator '{path}' does not exist; pass a local causal-LM directory or a .gguf file")
        self.name = name or (f"{path}/{gguf_file}" if gguf_file else str(path))
        copy = dequantized_copy_path(path / gguf_file) if gguf_file else None
        if copy is not None and (copy / "config.json").is_file():
            path, gguf_file, copy = copy, None, None  # converted before: load the copy
        options: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {}
        self.loaded_from = path / gguf_file if gguf_file else path
        quiet_transformers()
        with _gguf_conversion() if gguf_file else nullcontext():
            try:
                config = AutoConfig.from_pretrained(path, **options)
            except (OSError, ValueError) as exc:
                raise RagtuneError(f"'{path}' is not a transformers model directory (no usable config): {exc}") from exc
            if not _is_causal_lm(config):
                raise RagtuneError(
                    f"'{path}' holds a {config.model_type} model, which is not a causal language model; "
                    "pass a generative (decoder) model such as SmolLM2, Qwen or Llama"
                )
            self.tokenizer = AutoTokenizer.from_pretrained(path, **options)
            self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, **options)
        if copy is not None:
            _save_copy(self.model, self.tokenizer, copy)
        self.model.to(self.device, dtype=torch.bfloat16 if precision == "bf16" else torch.float32).eval()
        self.context_window = int(getattr(config, "max_position_embeddings", 2048) or 2048)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "left"  # decoder-only batches pad on the left so every row ends at its prompt

    def render(self, messages: Sequence[Message]) -> str:
        if self.tokenizer.chat_template:
            return str(self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True))
        lines = [f"{m['role']}: {m['content']}" for m in messages]
        return "\n\n".join(lines) + "\n\nassistant:"

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_tokens(self, messages: Sequence[Message]) -> int:
        return self.count_tokens(self.render(messages))

    def _inputs(self, prompts: list[str]) -> Any:
        return self.tokenizer(
            prompts, return_tensors="pt", padding=True, add_special_tokens=False, return_token_type_ids=False
        ).to(self.device)  # a decoder takes no segment ids, though BERT-style tokenizers make them

    def _options(self, max_new_tokens: int, temperature: float) -> dict[str, Any]:
        options: dict[str, Any] = {
            "max_new_tokens": max_new_tokens,
            "pad_token_id": self.tokenizer.pad_token_id,
            "repetition_penalty": REPETITION_PENALTY,
        }
        if temperature > 0:
            options.update(do_sample=True, temperature=temperature, top_p=0.95)
        else:
            options.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return options

    def stream(self, messages: Sequence[Message], max_new_tokens: int, temperature: float = 0.0) -> TextStream:
        """Pieces of text as they are generated. Closing the iterator early (a reader that has what it needs, a client
        that went away) stops generation at the next token instead of letting it run to `max_new_tokens`."""
        import torch
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        inputs = self._inputs([self.render(messages)])
        failure: list[BaseException] = []
        cancelled = threading.Event()

        def run() -> None:
            try:
                with torch.inference_mode():
                    self.model.generate(**inputs, streamer=streamer, **self._options(max_new_tokens, temperature),
                                        stopping_criteria=StoppingCriteriaList([_StopWhenSet(cancelled)]))  # fmt: skip
            except BaseException as exc:  # re-raised in the caller's thread below
                failure.append(exc)
                streamer.end()

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        try:
            for piece in streamer:
                if piece:
                    yield piece
        finally:
            cancelled.set()
            worker.join()
        if failure:
            raise failure[0]

    def generate_batch(
        self, conversations: Sequence[Sequence[Message]], max_new_tokens: int, temperature: float = 0.0
    ) -> list[str]:
        import torch

        if not conversations:
            return []
        inputs = self._inputs([self.render(c) for c in conversations])
        with torch.inference_mode():
            output = self.model.generate(**inputs, **self._options(max_new_tokens, temperature))
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        return [text.strip() for text in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]


class _StopWhenSet:
    """A transformers stopping criterion: every row stops once the event is set (the reader closed the stream)."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


def dequantized_copy_path(gguf: Path) -> Path:
    """Where the transformers copy of a GGUF file is kept (under the ragtune cache, keyed by the file's content).

    transformers dequantises a GGUF file tensor by tensor in Python on every load (51 s for the 90 MB SmolLM2-135M
    Q4_1 file here); the float32 copy it produced loads in a few seconds, with the same weights.
    """
    if not gguf.is_file():
        raise RagtuneError(f"generator file '{gguf}' does not exist")
    with gguf.open("rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()[:16]
    return cache_root() / "generators" / f"{gguf.stem}-{digest}"


def _save_copy(model: Any, tokenizer: Any, target: Path) -> None:
    """Write the copy beside its final place and rename it there; where another process got there first, keep its."""
    from safetensors.torch import save_model  # transformers refuses to save a model it loaded from GGUF

    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    try:
        partial.mkdir(parents=True)
        save_model(model, str(partial / "model.safetensors"))  # tied embeddings stored once
        model.config.save_pretrained(partial)
        config = json.loads((partial / "config.json").read_text())
        config.pop("quantization_config", None)  # the copy holds plain float32 weights
        (partial / "config.json").write_text(json.dumps(config, indent=2))
        if model.generation_config is not None:
            model.generation_config.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        os.rename(partial, target)
    except OSError as exc:
        shutil.rmtree(partial, ignore_errors=True)
        if (target / "config.json").is_file():
            return
        raise RagtuneError(
            f"cannot keep the converted generator in '{target.parent}' ({exc.strerror or exc}): point $RAGTUNE_CACHE "
            "at a writable folder with ~600 MB free"
        ) from None


_CAUSAL_HEADS = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")


def _is_causal_lm(config: Any) -> bool:
    """Decoder checkpoints name a generation head; an encoder (e.g. a BertModel embedder) does not."""
    from transformers import AutoModelForCausalLM

    architectures = getattr(config, "architectures", None) or []
    if architectures:
        return any(name.endswith(_CAUSAL_HEADS) for name in architectures)
    return type(config) in AutoModelForCausalLM._model_mapping and not getattr(config, "is_encoder_decoder", False)


@contextmanager
def _gguf_conversion() -> Iterator[None]:
    """A GGUF file read once, not once per part, and without transformers' progress bars.

    Loading config, tokenizer and weights, transformers parses the whole file four times (its 49k-entry vocabulary and
    merges through numpy memmap slices: ~10 s each here) and builds gguf's tensor-name table once per tensor; within
    this block each file is parsed once and each table built once. transformers also draws a tqdm bar per load that
    its progress switch does not reach; ragtune shows its own.
    """
    import gguf
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    parsed: dict[str, Any] = {}
    reader_class, name_map, bar = gguf.GGUFReader, gguf.get_tensor_name_map, gguf_utils.tqdm

    def read_once(path: str | os.PathLike[str], *args: Any, **kwargs: Any) -> Any:
        key = os.path.realpath(path)
        if key not in parsed:
            parsed[key] = reader_class(path, *args, **kwargs)
        return parsed[key]

    gguf.GGUFReader = read_once  # transformers imports both names from `gguf` at each call
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(name_map)
    gguf_utils.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map, gguf_utils.tqdm = reader_class, name_map, bar

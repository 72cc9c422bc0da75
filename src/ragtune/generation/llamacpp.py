"""llama-cpp-python, when the user has installed it (it compiles from source, so ragtune never requires it)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ragtune.errors import RagtuneError, missing_dependency
from ragtune.generation.base import Message, TextStream


class LlamaCppGenerator:
    """A GGUF file run by llama.cpp: quantised kernels, several times faster than dequantised transformers on CPU."""

    def __init__(self, gguf_path: str | Path, context_window: int = 4096, threads: int | None = None) -> None:
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise missing_dependency("llama_cpp", "'ragtune[llamacpp]'  (compiles llama.cpp: ~20 min)") from exc
        path = Path(gguf_path)
        if not path.is_file():
            raise RagtuneError(f"GGUF file '{path}' does not exist")
        self.llm: Any = Llama(model_path=str(path), n_ctx=context_window, n_threads=threads, verbose=False)
        self.name = f"llama.cpp:{path}"
        self.context_window = context_window

    def count_tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode(), add_bos=False, special=True))

    def prompt_tokens(self, messages: Sequence[Message]) -> int:
        return sum(self.count_tokens(m["content"]) + 5 for m in messages) + 3

    def stream(self, messages: Sequence[Message], max_new_tokens: int, temperature: float = 0.0) -> TextStream:
        chunks = self.llm.create_chat_completion(
            messages=list(messages), max_tokens=max_new_tokens, temperature=temperature, stream=True
        )
        for chunk in chunks:
            piece = chunk["choices"][0]["delta"].get("content")
            if piece:
                yield piece

    def generate_batch(
        self, conversations: Sequence[Sequence[Message]], max_new_tokens: int, temperature: float = 0.0
    ) -> list[str]:
        return ["".join(self.stream(c, max_new_tokens, temperature)).strip() for c in conversations]

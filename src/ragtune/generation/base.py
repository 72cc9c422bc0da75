"""What every generator backend offers: chat in, text out (streamed or batched), and a token count for budgets."""

from __future__ import annotations

import collections.abc
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

Message = dict[str, str]
"""One chat message: `{"role": "system" | "user" | "assistant", "content": "..."}`."""
TextStream = collections.abc.Generator[str, None, None]
"""Pieces of generated text as they come; closing the stream early stops the generation behind it."""


@runtime_checkable
class Generator(Protocol):
    """A chat model. `context_window` bounds prompt plus answer; `prompt_tokens` measures a conversation as sent."""

    name: str
    context_window: int

    def count_tokens(self, text: str) -> int: ...

    def prompt_tokens(self, messages: Sequence[Message]) -> int: ...

    def stream(self, messages: Sequence[Message], max_new_tokens: int, temperature: float = 0.0) -> TextStream: ...

    def generate_batch(
        self, conversations: Sequence[Sequence[Message]], max_new_tokens: int, temperature: float = 0.0
    ) -> list[str]: ...

"""Assemble the grounded prompt: numbered passages packed into the generator's context, the instruction never cut."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ragtune.errors import InputError
from ragtune.generation.base import Generator, Message
from ragtune.types import Hit

ABSTAIN_MESSAGE = "The corpus does not contain the answer to this question."
DEFAULT_SYSTEM_PROMPT = (
    "You answer questions using only the numbered passages you are given, never outside knowledge. "
    "After each statement, cite the passages that support it by number in square brackets, like [1] or [2][3]. "
    "If the passages do not contain the answer, reply exactly: {abstain}"
)
_CANNOT_ANSWER = re.compile(
    r"(does not|doesn't|do not|don't) (contain|provide|include|mention)|cannot (be )?answer|can't answer|"
    r"unable to answer|not enough information|no information|i (do not|don't) know|not possible to (answer|determine)",
    re.IGNORECASE,
)
MIN_PASSAGE_TOKENS = 24
"""A passage cut shorter than this carries no usable evidence; packing stops instead."""


@dataclass(frozen=True)
class PromptPassage:
    """A retrieved passage as numbered in the prompt; `text` may be cut to fit the budget (`truncated`)."""

    number: int
    hit: Hit
    text: str
    truncated: bool


@dataclass(frozen=True)
class PackedPrompt:
    messages: list[Message]
    passages: list[PromptPassage]
    prompt_tokens: int
    budget: int


def system_prompt_text(template: str | None) -> str:
    """The system prompt; a user template may use `{abstain}` for the sentence that signals no answer."""
    return (template or DEFAULT_SYSTEM_PROMPT).replace("{abstain}", ABSTAIN_MESSAGE)


def says_it_cannot_answer(sentence: str) -> bool:
    """Whether a generated sentence declines to answer ("the passages do not contain …", "I don't know")."""
    return bool(_CANNOT_ANSWER.search(sentence))


def _passage_block(number: int, hit: Hit, text: str) -> str:
    label = " — ".join(part for part in (hit.title, hit.source) if part)
    return f"[{number}] {label}\n{text}" if label else f"[{number}] {text}"


def _messages(question: str, blocks: Sequence[str], system: str, instruction: str | None) -> list[Message]:
    context = "\n\n".join(blocks) if blocks else "(no passages)"
    user = f"Passages:\n\n{context}\n\nQuestion: {question.strip()}"
    if instruction:
        user += f"\n{instruction.strip()}"
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def closed_book_messages(question: str, instruction: str | None = None) -> list[Message]:
    """The same question with no passages (the closed-book baseline)."""
    user = f"Question: {question.strip()}" + (f"\n{instruction.strip()}" if instruction else "")
    return [{"role": "system", "content": "Answer the question."}, {"role": "user", "content": user}]


def cut_to_tokens(text: str, max_tokens: int, generator: Generator) -> str:
    """The longest word-aligned prefix of `text` within `max_tokens` (binary search over the word count)."""
    words = text.split()
    low, high = 0, len(words)
    while low < high:
        middle = (low + high + 1) // 2
        if generator.count_tokens(" ".join(words[:middle]) + " …") <= max_tokens:
            low = middle
        else:
            high = middle - 1
    return " ".join(words[:low]) + " …" if low else ""


def pack_prompt(
    question: str,
    hits: Sequence[Hit],
    generator: Generator,
    max_new_tokens: int,
    system_prompt: str | None = None,
    instruction: str | None = None,
) -> PackedPrompt:
    """Put as many passages, best first, as fit in `context_window − max_new_tokens`; the last one may be cut.

    `instruction` (e.g. "Answer yes, no or maybe.") follows the question and, like it, is never cut.
    """
    system = system_prompt_text(system_prompt)
    budget = generator.context_window - max_new_tokens
    fixed = generator.prompt_tokens(_messages(question, [], system, instruction))
    if fixed + MIN_PASSAGE_TOKENS > budget:
        raise InputError(
            f"the question and instructions take {fixed} tokens, leaving no room for passages in the generator's "
            f"{generator.context_window}-token context with {max_new_tokens} answer tokens; shorten the question"
        )
    remaining = budget - fixed
    passages: list[PromptPassage] = []
    for number, hit in enumerate(hits, start=1):
        block = _passage_block(number, hit, hit.text)
        cost = generator.count_tokens(block) + 2  # the blank line between passages
        if cost <= remaining:
            passages.append(PromptPassage(number, hit, hit.text, truncated=False))
            remaining -= cost
            continue
        room = remaining - generator.count_tokens(_passage_block(number, hit, "")) - 4
        if room >= MIN_PASSAGE_TOKENS:
            cut = cut_to_tokens(hit.text, room, generator)
            if cut:
                passages.append(PromptPassage(number, hit, cut, truncated=True))
        break
    while True:  # token counts of the pieces need not add up exactly once joined: verify the whole and trim
        blocks = [_passage_block(p.number, p.hit, p.text) for p in passages]
        messages = _messages(question, blocks, system, instruction)
        used = generator.prompt_tokens(messages)
        if used <= budget or not passages:
            return PackedPrompt(messages, passages, used, budget)
        last = passages.pop()
        shorter = cut_to_tokens(last.text, max(generator.count_tokens(last.text) - (used - budget) - 8, 0), generator)
        if generator.count_tokens(shorter) >= MIN_PASSAGE_TOKENS:
            passages.append(PromptPassage(last.number, last.hit, shorter, truncated=True))

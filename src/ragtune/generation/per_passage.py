"""Cited by construction: the generator writes from one passage at a time, and ragtune cites the passage it was shown.

Given several numbered passages, the bundled 135M model writes no `[n]` at all (BENCHMARKS.md). Asked about one
passage, it needs to cite nothing: its reply is cut to its first sentence and followed by that passage's number.
Whether the sentence says what the passage says is still checked afterwards (`support.check_support`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ragtune.generation.base import Generator, Message
from ragtune.generation.citations import clean_citations
from ragtune.generation.prompts import PromptPassage, pack_prompt, says_it_cannot_answer
from ragtune.types import Hit

PROMPTINGS = ("together", "per-passage")
"""together: every passage in one prompt, the generator cites them; per-passage: one sentence written from each of
the top passages, cited by construction."""
PER_PASSAGE_SYSTEM_PROMPT = (
    "You answer a question from one passage, using only what the passage says. Reply with one sentence. "
    "If the passage does not answer the question, reply exactly: {abstain}"
)
PER_PASSAGE_MAX_NEW_TOKENS = 64
"""One sentence; the rest of a longer reply would be cut anyway."""
_SHORT_SENTENCE_WORDS = 4
"""A first sentence this short ("Yes.", "No, it does not.") is a verdict; it is joined to the reason that follows."""
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class PassagePrompt:
    passage: PromptPassage
    """Numbered as it will be cited in the joined answer."""
    messages: list[Message]


def per_passage_prompts(
    question: str,
    hits: Sequence[Hit],
    generator: Generator,
    count: int,
    system_prompt: str | None = None,
    instruction: str | None = None,
) -> list[PassagePrompt]:
    """One prompt for each of the best `count` passages, alone (cut to the context like any packed passage)."""
    prompts: list[PassagePrompt] = []
    for hit in hits[:count]:
        packed = pack_prompt(
            question, [hit], generator, PER_PASSAGE_MAX_NEW_TOKENS, system_prompt or PER_PASSAGE_SYSTEM_PROMPT,
            instruction,
        )  # fmt: skip
        if packed.passages:
            shown = packed.passages[0]
            prompts.append(PassagePrompt(PromptPassage(len(prompts) + 1, hit, shown.text, shown.truncated),
                                         packed.messages))  # fmt: skip
    return prompts


def cited_sentence(reply: str, number: int) -> str | None:
    """The reply's first sentence (two when the first is a bare verdict), its own `[n]` marks removed, ending with
    `[number]` before its full stop; None when the reply is empty or says the passage does not answer."""
    sentences = _sentences(reply)
    kept = sentences[0]
    if _is_verdict(kept) and len(sentences) > 1:
        kept = f"{kept.rstrip('.!?')}, {_lower_first_word(sentences[1])}"  # one sentence, so one claim to check
    if not kept or says_it_cannot_answer(kept):
        return None
    body, end = re.fullmatch(r"(.*?)([.!?]*)", kept, re.DOTALL).groups()  # type: ignore[union-attr]
    return f"{body} [{number}]{end}"  # inside the sentence, where generators put it and `cited_span` looks


def kept_sentence_is_written(reply: str) -> bool:
    """True once more text of the reply cannot change what `cited_sentence` keeps: the next sentence has begun.
    Generation can stop there (the rest of a reply is cut anyway)."""
    sentences = _sentences(reply)
    return len(sentences) > (2 if _is_verdict(sentences[0]) else 1)


def _sentences(reply: str) -> list[str]:
    text = clean_citations(" ".join(reply.split()), passage_count=0).text  # every mark of its own goes
    return _SENTENCE_END.split(text)


def _is_verdict(sentence: str) -> bool:
    return len(sentence.split()) < _SHORT_SENTENCE_WORDS


def _lower_first_word(sentence: str) -> str:
    """"The seal" → "the seal"; "DNA repair" stays."""
    first = sentence.split(" ", 1)[0]
    return sentence[:1].lower() + sentence[1:] if first[:1].isupper() and first[1:].islower() else sentence

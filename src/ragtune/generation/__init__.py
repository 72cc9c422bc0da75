"""Generation: backends (local transformers/GGUF, OpenAI-compatible HTTP, llama.cpp), prompts, grounded answers."""

from ragtune.generation.answer import (
    ANSWER_MODES,
    DEFAULT_MIN_RELEVANCE,
    Answer,
    Answerer,
    AnswerStream,
    Citation,
    default_answer_mode,
    default_prompting,
)
from ragtune.generation.base import Generator, Message
from ragtune.generation.loading import DEFAULT_GENERATOR, load_generator, packaged_smollm2
from ragtune.generation.prompts import ABSTAIN_MESSAGE, DEFAULT_SYSTEM_PROMPT, PackedPrompt, pack_prompt

__all__ = [
    "ANSWER_MODES",
    "ABSTAIN_MESSAGE",
    "DEFAULT_GENERATOR",
    "DEFAULT_MIN_RELEVANCE",
    "DEFAULT_SYSTEM_PROMPT",
    "Answer",
    "AnswerStream",
    "Answerer",
    "Citation",
    "default_answer_mode",
    "default_prompting",
    "Generator",
    "Message",
    "PackedPrompt",
    "load_generator",
    "pack_prompt",
    "packaged_smollm2",
]

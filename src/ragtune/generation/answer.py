"""Retrieve, pack, generate, cite: the answer step of RAG, streamed or batched, abstaining rather than guessing."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ragtune.errors import InputError
from ragtune.generation.base import Generator, Message
from ragtune.generation.citations import StreamingCitationFilter, cited_span, clean_citations
from ragtune.generation.evidence import DEFAULT_MAX_SENTENCES, DEFAULT_MIN_SENTENCE_SCORE, select_evidence
from ragtune.generation.loading import is_bundled_generator
from ragtune.generation.per_passage import (
    PER_PASSAGE_MAX_NEW_TOKENS,
    PROMPTINGS,
    PassagePrompt,
    cited_sentence,
    kept_sentence_is_written,
    per_passage_prompts,
)
from ragtune.generation.prompts import (
    ABSTAIN_MESSAGE,
    PackedPrompt,
    PromptPassage,
    pack_prompt,
    says_it_cannot_answer,
)
from ragtune.generation.support import DEFAULT_SUPPORT_THRESHOLD, SentenceSupport, check_support
from ragtune.retrieval import Retriever, SearchMode
from ragtune.types import Hit

DEFAULT_MIN_RELEVANCE = 0.2
"""Cosine similarity (store embedder) between the question and the best passage below which ragtune abstains."""
DEFAULT_MAX_NEW_TOKENS = 256
ANSWER_MODES = ("extractive", "generate", "both")
"""extractive: the passages' best sentences, quoted and cited (no generator); generate: the generator writes it, each
sentence checked against the passages it cites; both: the generated answer with the evidence answer beside it."""
NO_SUPPORT_NOTE = ("the generated answer had no sentence the passages support (support check); showing the "
                   "passages' evidence instead")


@dataclass(frozen=True)
class Citation:
    number: int
    passage_id: str
    doc_id: str
    title: str
    source: str
    span: tuple[int, int] | None
    """Character offsets, in the passage text, of the sentence that best matches the citing claim."""

    def to_json(self, passage_text: str) -> dict[str, Any]:
        return {
            "number": self.number,
            "passage_id": self.passage_id,
            "doc_id": self.doc_id,
            "title": self.title,
            "source": self.source,
            "span": list(self.span) if self.span else None,
            "span_text": passage_text[self.span[0] : self.span[1]].strip() if self.span else None,
        }


@dataclass(frozen=True)
class Answer:
    question: str
    text: str
    citations: list[Citation]
    passages: list[PromptPassage]
    abstained: bool
    abstain_reason: str | None = None
    invalid_citations: int = 0
    relevance: float | None = None
    timings: dict[str, float] = field(default_factory=dict)
    support: tuple[SentenceSupport, ...] = ()
    """Per sentence of a generated answer: its best supporting passage sentence and whether it clears the threshold."""
    note: str | None = None
    evidence: Answer | None = None
    """The evidence answer shown beside a generated one (`answer="both"`)."""
    replaced: Answer | None = None
    """The generated answer this evidence answer stands in for, when none of its sentences was supported."""

    @property
    def supported_share(self) -> float | None:
        return sum(s.supported for s in self.support) / len(self.support) if self.support else None

    def to_json(self) -> dict[str, Any]:
        texts = {p.number: p.hit.text for p in self.passages}
        extra: dict[str, Any] = {}
        if self.support:
            extra["sentences"] = [s.to_json(self.text) for s in self.support]
            extra["supported_share"] = self.supported_share
        if self.note:
            extra["note"] = self.note
        if self.evidence is not None:
            extra["evidence"] = self.evidence.to_json()
        if self.replaced is not None:
            extra["replaced"] = self.replaced.to_json()
        return extra | {
            "question": self.question,
            "answer": self.text,
            "abstained": self.abstained,
            "abstain_reason": self.abstain_reason,
            "citations": [c.to_json(texts[c.number]) for c in self.citations],
            "invalid_citations_removed": self.invalid_citations,
            "relevance": self.relevance,
            "hits": [dict(p.hit.to_json(), number=p.number, truncated=p.truncated) for p in self.passages],
            "timings": self.timings,
        }


class AnswerStream:
    """Iterate for the answer's text as it is generated; `answer` is set once the iteration ends.

    `passages` (what the generator was shown) is known before the first token.
    """

    def __init__(self, tokens: Iterator[str], passages: list[PromptPassage]) -> None:
        self._tokens = tokens
        self.passages = passages
        self.answer: Answer | None = None

    def __iter__(self) -> Iterator[str]:
        return self._tokens

    def close(self) -> None:
        """Stop the generation behind the stream (a reader that went away); `answer` stays unset."""
        close = getattr(self._tokens, "close", None)
        if close is not None:
            close()


def default_answer_mode(generator_spec: str | None) -> str:
    """Extractive with the bundled 135M generator (it cites nothing and answers worse with passages than without:
    BENCHMARKS.md), generate with any generator the user names."""
    return "extractive" if is_bundled_generator(generator_spec) else "generate"


def default_prompting(generator_spec: str | None) -> str:
    """per-passage with the bundled 135M generator (together it cites nothing; one passage at a time its sentences
    are cited by construction and cite the question's own abstract 98 % of the time on PubMedQA: BENCHMARKS.md),
    together with any generator the user names."""
    return "per-passage" if is_bundled_generator(generator_spec) else "together"


class Answerer:
    """Answers questions from one store, with evidence sentences (`answer="extractive"`, no generator needed) or with a
    generator. `min_relevance` ≤ 0 disables retrieval abstention."""

    def __init__(
        self,
        retriever: Retriever,
        generator: Generator | None,
        k: int = 5,
        mode: SearchMode | str | None = None,
        min_relevance: float = DEFAULT_MIN_RELEVANCE,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        system_prompt: str | None = None,
        instruction: str | None = None,
        answer: str = "generate",
        max_sentences: int = DEFAULT_MAX_SENTENCES,
        min_sentence_score: float = DEFAULT_MIN_SENTENCE_SCORE,
        support_threshold: float = DEFAULT_SUPPORT_THRESHOLD,
        prompting: str = "together",
    ) -> None:
        if answer not in ANSWER_MODES:
            raise InputError(f"--answer {answer} is not one of: {', '.join(ANSWER_MODES)}")
        if prompting not in PROMPTINGS:
            raise InputError(f"--prompting {prompting} is not one of: {', '.join(PROMPTINGS)}")
        if answer != "extractive":
            if generator is None:
                raise InputError("--answer generate needs a generator (--generator)")
            if max_new_tokens < 1 or max_new_tokens >= generator.context_window:
                raise InputError(
                    f"--max-new-tokens must be between 1 and the context window ({generator.context_window})"
                )
        self.answer_mode = answer
        self.prompting = prompting
        self.support_threshold = support_threshold
        self.max_sentences = max_sentences
        self.min_sentence_score = min_sentence_score
        self.retriever = retriever
        self.generator = generator
        self.k = k
        self.mode = SearchMode(mode) if mode is not None else None  # None: the store's recorded mode
        self.min_relevance = min_relevance
        self.max_new_tokens = max_new_tokens
        self.system_prompt = system_prompt
        self.instruction = instruction

    def relevance(self, question: str, hit: Hit) -> float:
        """How close the best passage is to the question, on one scale whatever the search mode or reranker."""
        store = self.retriever.store
        return float(np.dot(store.embedder.encode_query(question), store.embedding(hit.id)))

    def _retrieve(self, question: str, filters: Sequence[tuple[str, str]]) -> tuple[list[Hit], float | None, str | None]:
        hits = self.retriever.search(question, k=self.k, mode=self.mode, filters=filters)
        if not hits:
            return hits, None, "no passage matched the question"
        if self.min_relevance <= 0:
            return hits, None, None
        relevance = self.relevance(question, hits[0])
        if relevance < self.min_relevance:
            return hits, relevance, f"best passage relevance {relevance:.3f} is below --min-relevance {self.min_relevance}"
        return hits, relevance, None

    def stream(self, question: str, filters: Sequence[tuple[str, str]] = ()) -> AnswerStream:
        if not question.strip():
            raise InputError("the question is empty: ask something")
        started = time.perf_counter()
        hits, relevance, reason = self._retrieve(question, filters)
        retrieval_s = time.perf_counter() - started
        if reason is not None:
            answer = _abstention(question, hits, reason, relevance, {"retrieval_s": retrieval_s})
            return _finished_stream(answer)
        if self.answer_mode == "extractive":
            evidence_started = time.perf_counter()
            answer = self._evidence_answer(question, hits, relevance)
            timings = {"retrieval_s": retrieval_s, "evidence_s": time.perf_counter() - evidence_started}
            return _finished_stream(replace(answer, timings=timings))
        if self.prompting == "per-passage":
            return self._stream_per_passage(question, hits, relevance, retrieval_s)
        generator = self.generator
        assert generator is not None
        packed = self._pack(question, hits)
        citation_filter = StreamingCitationFilter(len(packed.passages))
        holder: list[AnswerStream] = []

        def tokens() -> Iterator[str]:
            raw: list[str] = []
            generation_started = time.perf_counter()
            first_token_s: float | None = None
            with closing(generator.stream(packed.messages, self.max_new_tokens)) as pieces:
                for piece in pieces:
                    if first_token_s is None:
                        first_token_s = time.perf_counter() - generation_started
                    raw.append(piece)
                    shown = citation_filter.feed(piece)
                    if shown:
                        yield shown
            tail = citation_filter.flush()
            if tail:
                yield tail
            generation_s = time.perf_counter() - generation_started
            text = "".join(raw)
            timings = _generation_timings(retrieval_s, first_token_s, generation_s, generator.count_tokens(text))
            holder[0].answer = self._finish(question, text, packed.passages, relevance, timings)

        stream = AnswerStream(tokens(), packed.passages)
        holder.append(stream)
        return stream

    def _stream_per_passage(
        self, question: str, hits: list[Hit], relevance: float | None, retrieval_s: float
    ) -> AnswerStream:
        """One sentence from each top passage, each shown as soon as it is written, cited by construction."""
        generator = self.generator
        assert generator is not None
        prompts = self._passage_prompts(question, hits)
        passages = [p.passage for p in prompts]
        holder: list[AnswerStream] = []

        def sentences() -> Iterator[str]:
            replies: list[str] = []
            written: list[str] = []
            generation_started = time.perf_counter()
            first_sentence_s: float | None = None
            for prompt in prompts:
                replies.append(_reply_until_kept_sentence(generator, prompt.messages, self._per_passage_tokens))
                sentence = cited_sentence(replies[-1], prompt.passage.number)
                if sentence:
                    first_sentence_s = first_sentence_s or time.perf_counter() - generation_started
                    yield (" " if written else "") + sentence
                    written.append(sentence)
            generation_s = time.perf_counter() - generation_started
            completion_tokens = sum(generator.count_tokens(reply) for reply in replies)
            timings = _generation_timings(retrieval_s, first_sentence_s, generation_s, completion_tokens)
            holder[0].answer = self._finish(question, " ".join(written), passages, relevance, timings)

        stream = AnswerStream(sentences(), passages)
        holder.append(stream)
        return stream

    @property
    def _per_passage_tokens(self) -> int:
        return min(self.max_new_tokens, PER_PASSAGE_MAX_NEW_TOKENS)

    def _passage_prompts(self, question: str, hits: list[Hit]) -> list[PassagePrompt]:
        assert self.generator is not None
        return per_passage_prompts(question, hits, self.generator, self.max_sentences, self.system_prompt,
                                   self.instruction)  # fmt: skip

    def ask(self, question: str, filters: Sequence[tuple[str, str]] = ()) -> Answer:
        stream = self.stream(question, filters)
        for _ in stream:
            pass
        assert stream.answer is not None
        return stream.answer

    def ask_many(self, questions: Sequence[str], batch_size: int = 8) -> list[Answer]:
        """Batched generation (no streaming): the fast path for evaluation and sample answers."""
        generator = self.generator
        if generator is None or self.answer_mode == "extractive":
            return [self.ask(question) for question in questions]
        answers: list[Answer | None] = [None] * len(questions)
        pending: list[tuple[int, list[Hit], float | None]] = []
        for index, question in enumerate(questions):
            hits, relevance, reason = self._retrieve(question, ())
            if reason is not None:
                answers[index] = _abstention(question, hits, reason, relevance, {})
            else:
                pending.append((index, hits, relevance))
        if self.prompting == "per-passage":
            prompts = {index: self._passage_prompts(questions[index], hits) for index, hits, _ in pending}
            flat = [(index, prompt) for index, _, _ in pending for prompt in prompts[index]]
            replies = _generate_batched(generator, [p.messages for _, p in flat], self._per_passage_tokens, batch_size)
            written: dict[int, list[str]] = {index: [] for index, _, _ in pending}
            for (index, prompt), reply in zip(flat, replies, strict=True):
                sentence = cited_sentence(reply, prompt.passage.number)
                if sentence:
                    written[index].append(sentence)
            for index, _, relevance in pending:
                passages = [p.passage for p in prompts[index]]
                answers[index] = self._finish(questions[index], " ".join(written[index]), passages, relevance, {})
        else:
            packed = {index: self._pack(questions[index], hits) for index, hits, _ in pending}
            texts = _generate_batched(generator, [packed[i].messages for i, _, _ in pending], self.max_new_tokens,
                                      batch_size)  # fmt: skip
            for (index, _, relevance), text in zip(pending, texts, strict=True):
                answers[index] = self._finish(questions[index], text, packed[index].passages, relevance, {})
        return [a for a in answers if a is not None]

    def _evidence_answer(self, question: str, hits: list[Hit], relevance: float | None) -> Answer:
        """The evidence sentences as the answer, each followed by its citation `[n]`; abstains when none clears the
        floor."""
        evidence = select_evidence(
            question, hits, self.retriever.store.embedder, self.max_sentences, self.min_sentence_score
        )
        if not evidence:
            reason = f"no sentence of the retrieved passages scores {self.min_sentence_score} or more against the question"
            return _abstention(question, hits, reason, relevance, {})
        passages = [PromptPassage(number, hit, hit.text, False) for number, hit in enumerate(hits, start=1)]
        text = " ".join(f"{' '.join(e.text.split())} [{e.number}]" for e in evidence)
        citations = [Citation(e.number, e.hit.id, e.hit.doc_id, e.hit.title, e.hit.source, e.span) for e in evidence]
        return Answer(question, text, citations, passages, False, None, 0, relevance, {})

    def _pack(self, question: str, hits: list[Hit]) -> PackedPrompt:
        assert self.generator is not None
        return pack_prompt(question, hits, self.generator, self.max_new_tokens, self.system_prompt, self.instruction)

    def _finish(
        self, question: str, raw: str, passages: list[PromptPassage], relevance: float | None, timings: dict[str, float]
    ) -> Answer:
        cleaned = clean_citations(raw, len(passages))
        first_sentence = re.split(r"(?<=[.!?])\s", cleaned.text, maxsplit=1)[0]
        if not cleaned.text or says_it_cannot_answer(first_sentence):
            reason = "the generator produced no answer" if not cleaned.text else "the generator said it cannot answer"
            return Answer(question, ABSTAIN_MESSAGE, [], passages, True, reason, cleaned.invalid, relevance, timings)
        by_number = {p.number: p for p in passages}
        citations = [
            Citation(
                number,
                by_number[number].hit.id,
                by_number[number].hit.doc_id,
                by_number[number].hit.title,
                by_number[number].hit.source,
                cited_span(cleaned.text, number, by_number[number].hit.text),
            )
            for number in cleaned.cited
        ]
        support = tuple(check_support(cleaned.text, passages, self.retriever.store.embedder, self.support_threshold))
        generated = Answer(question, cleaned.text, citations, passages, False, None, cleaned.invalid, relevance, timings,
                           support)  # fmt: skip
        if support and not any(s.supported for s in support):
            evidence = self._evidence_answer(question, [p.hit for p in passages], relevance)
            return replace(evidence, timings=timings, note=NO_SUPPORT_NOTE, replaced=generated)
        if self.answer_mode == "both":
            return replace(generated, evidence=self._evidence_answer(question, [p.hit for p in passages], relevance))
        return generated


def _generate_batched(
    generator: Generator, conversations: Sequence[Sequence[Message]], max_new_tokens: int, batch_size: int
) -> list[str]:
    replies: list[str] = []
    for start in range(0, len(conversations), batch_size):
        replies += generator.generate_batch(conversations[start : start + batch_size], max_new_tokens)
    return replies


def _reply_until_kept_sentence(generator: Generator, messages: Sequence[Message], max_new_tokens: int) -> str:
    """A per-passage reply, read only until the sentence that will be kept is written (closing the stream stops the
    generator there)."""
    reply = ""
    with closing(generator.stream(messages, max_new_tokens)) as pieces:
        for piece in pieces:
            reply += piece
            if kept_sentence_is_written(reply):
                break
    return reply


def _generation_timings(
    retrieval_s: float, first_token_s: float | None, generation_s: float, completion_tokens: int
) -> dict[str, float]:
    return {
        "retrieval_s": retrieval_s,
        "first_token_s": first_token_s or generation_s,
        "generation_s": generation_s,
        "completion_tokens": float(completion_tokens),
        "tokens_per_s": completion_tokens / generation_s if generation_s > 0 else 0.0,
    }


def _abstention(
    question: str, hits: list[Hit], reason: str, relevance: float | None, timings: dict[str, float]
) -> Answer:
    passages = [PromptPassage(n, h, h.text, False) for n, h in enumerate(hits, start=1)]
    return Answer(question, ABSTAIN_MESSAGE, [], passages, True, reason, 0, relevance, timings)


def _finished_stream(answer: Answer) -> AnswerStream:
    """A stream that yields a finished answer's text at once."""
    stream = AnswerStream(iter([answer.text]), answer.passages)
    stream.answer = answer
    return stream

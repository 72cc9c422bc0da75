"""Grounded answers on PubMedQA test: RAG vs the same model closed-book, citations, and local generation speed.

Usage: python bench/bench_answer.py [--data ../shared/data/pubmedqa] [--generator smollm2] [--limit N]
                                   [--prompting together|per-passage] [--closed-book] [--one-at-a-time]
       python bench/bench_answer.py --answer extractive [--max-sentences 3] [--min-sentence-score 0.3]
Each test question is answered yes/no/maybe; the decision is the first of those words in the answer. With
`--answer extractive` no generator is loaded: the evidence answers are scored for citation validity (every citation
names a retrieved passage and its span slices back to the quoted text), evidence hit rate (a cited passage is the
question's own abstract), ROUGE-L F1 against the dataset's long answer (rouge-score, stemmed), abstention and latency.
Generated answers get the same measures twice: as the user sees them (`with_checks`: an answer with no supported
sentence replaced by the evidence) and as generated (`generated_only`), plus the share of supported sentences.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from collections import Counter
from pathlib import Path

from ragtune.evaluation.dataset import load_beir
from ragtune.generation import Answerer, load_generator
from ragtune.generation.prompts import closed_book_messages
from ragtune.retrieval import Retriever
from ragtune.store import index_sources, open_store

INSTRUCTION = "Start your answer with yes, no or maybe, then give one sentence of reasoning citing the passages."
DECISION = re.compile(r"\b(yes|no|maybe)\b", re.IGNORECASE)


def decision(text: str) -> str | None:
    match = DECISION.search(text)
    return match.group(1).lower() if match else None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=Path("../shared/data/pubmedqa"))
    parser.add_argument("--store", type=Path, default=Path("stores/pubmedqa"))
    parser.add_argument("--generator", default="smollm2")
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--answer", choices=["generate", "extractive"], default="generate")
    parser.add_argument("--prompting", choices=["together", "per-passage"], default="together")
    parser.add_argument("--closed-book", action="store_true", help="also answer each question with no passages")
    parser.add_argument("--one-at-a-time", action="store_true",
                        help="stream each answer as `ragtune ask` does (no batching) and report p50/p99 latency")  # fmt: skip
    parser.add_argument("--max-sentences", type=int, default=3)
    parser.add_argument("--min-sentence-score", type=float, default=0.3)
    args = parser.parse_args()
    if args.answer == "extractive":
        evidence_bench(args)
        return
    args.out = args.out or Path(f"bench/results/answer-{args.prompting}.json")

    dataset = load_beir(args.data, "test")
    ids = sorted(dataset.queries)[: args.limit]
    questions = [dataset.queries[i] for i in ids]
    gold = {}
    for line in (args.data / "queries.jsonl").read_text().splitlines():
        row = json.loads(line)
        gold[row["_id"]] = row["metadata"]["final_decision"]
    index_sources(args.store, [args.data / "corpus.jsonl"], model="minilm", show_progress=False)
    started = time.perf_counter()
    generator = load_generator(args.generator)
    load_s = time.perf_counter() - started
    result: dict = {"generator": generator.name, "prompting": args.prompting, "questions": len(ids), "k": args.k,
                    "max_new_tokens": args.max_new_tokens, "load_s": load_s}  # fmt: skip
    with open_store(args.store) as store:
        answerer = Answerer(
            Retriever(store), generator, k=args.k, min_relevance=0, max_new_tokens=args.max_new_tokens,
            instruction=INSTRUCTION, prompting=args.prompting, max_sentences=args.max_sentences,
        )  # fmt: skip
        started = time.perf_counter()
        if args.one_at_a_time:
            rag, latencies = answered_one_at_a_time(answerer, questions)
            result["latency"] = latencies
        else:
            rag = answerer.ask_many(questions, batch_size=args.batch_size)
        result["rag_seconds"] = time.perf_counter() - started
        closed: list[str] = []
        if args.closed_book:
            started = time.perf_counter()
            for start in range(0, len(questions), args.batch_size):
                batch = questions[start : start + args.batch_size]
                closed += generator.generate_batch([closed_book_messages(q, INSTRUCTION) for q in batch],
                                                   args.max_new_tokens)  # fmt: skip
            result["closed_book_seconds"] = time.perf_counter() - started

        speed = []
        for question in [] if args.one_at_a_time else questions[:10]:  # one at a time: every answer is timed
            streamed = Answerer(Retriever(store), generator, k=args.k, min_relevance=0, max_new_tokens=64,
                                prompting=args.prompting).stream(question)  # fmt: skip
            for _ in streamed:
                pass
            assert streamed.answer is not None
            speed.append(streamed.answer.timings | {"total_s": sum(
                streamed.answer.timings[key] for key in ("retrieval_s", "generation_s"))})  # fmt: skip
        default_abstain = Answerer(Retriever(store), generator, k=args.k)  # the shipped threshold, retrieval side only
        relevances = [default_abstain.relevance(q, Retriever(store).search(q, k=1)[0]) for q in questions]

    truth = [gold[i] for i in ids]
    checked = [s.supported for a in rag for s in (a.replaced or a).support]
    rag_decisions = [decision(a.text) for a in rag]
    result |= {
        "label_distribution": dict(Counter(truth)),
        "majority_class_accuracy": max(Counter(truth).values()) / len(truth),
        "rag_accuracy": sum(d == t for d, t in zip(rag_decisions, truth)) / len(truth),
        "rag_decisions": dict(Counter(str(d) for d in rag_decisions)),
        "rag_invalid_citations_removed": sum(a.invalid_citations for a in rag),
        "generated_kept": sum(not a.abstained and a.replaced is None for a in rag) / len(rag),
        "replaced_by_evidence": sum(a.replaced is not None for a in rag) / len(rag),
        "supported_sentence_share": statistics.mean(checked) if checked else None,
        "generated_with_valid_citation": sum(valid_citations(a.replaced or a) for a in rag if not a.abstained)
        / max(1, sum(not a.abstained for a in rag)),
        "share_below_default_min_relevance": sum(r < 0.2 for r in relevances) / len(relevances),
        "time_to_first_token_s_median": statistics.median(t["first_token_s"] for t in speed) if speed else None,
        "answer_seconds_median": statistics.median(t["total_s"] for t in speed) if speed else None,
        "tokens_per_s_median": statistics.median(
            t["tokens_per_s"] for t in (speed or [a.timings for a in rag if "tokens_per_s" in a.timings])),
        "with_checks": answer_quality(rag, ids, long_answers_of(args.data), dataset.qrels),
        "generated_only": answer_quality([a.replaced or a for a in rag], ids, long_answers_of(args.data), dataset.qrels),
        "examples": [
            {"question": q, "gold": t, "rag": a.text, "replaced": a.replaced.text if a.replaced else None}
            for q, t, a in list(zip(questions, truth, rag))[:8]
        ],
    }  # fmt: skip
    if closed:
        closed_decisions = [decision(t) for t in closed]
        result["closed_book_accuracy"] = sum(d == t for d, t in zip(closed_decisions, truth)) / len(truth)
        result["closed_book_decisions"] = dict(Counter(str(d) for d in closed_decisions))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "examples"}, indent=2))


def answered_one_at_a_time(answerer: Answerer, questions: list[str]) -> tuple[list, dict]:  # type: ignore[type-arg]
    """Each question streamed alone, as a user's `ragtune ask`; latency percentiles of the generated answer (retrieval
    + generation) and of the answer as shown (+ the support check and any replacement by evidence)."""
    answers, generated_s, shown_s, first_s = [], [], [], []
    for question in questions:
        started = time.perf_counter()
        stream = answerer.stream(question)
        for _ in stream:
            pass
        shown_s.append(time.perf_counter() - started)
        assert stream.answer is not None
        answers.append(stream.answer)
        timings = stream.answer.timings
        generated_s.append(timings["retrieval_s"] + timings.get("generation_s", 0.0))
        first_s.append(timings["retrieval_s"] + timings.get("first_token_s", 0.0))
    return answers, {name: percentiles(values) for name, values in
                     (("generated_s", generated_s), ("with_checks_s", shown_s), ("first_sentence_s", first_s))}  # fmt: skip


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"p50": statistics.median(ordered), "p99": ordered[int(0.99 * (len(ordered) - 1))], "max": ordered[-1]}


def long_answers_of(data: Path) -> dict[str, str]:
    """PubMedQA's long answers by question id; other data has none (ROUGE-L is left out)."""
    long_answers = {}
    for line in (data / "queries.jsonl").read_text().splitlines():
        row = json.loads(line)
        if (row.get("metadata") or {}).get("long_answer"):
            long_answers[row["_id"]] = row["metadata"]["long_answer"]
    return long_answers


def valid_citations(answer) -> bool:  # type: ignore[no-untyped-def]
    """≥ 1 citation, and each names a retrieved passage whose cited span slices back to a sentence of that passage."""
    by_number = {p.number: p.hit for p in answer.passages}
    return bool(answer.citations) and all(
        c.number in by_number and c.passage_id == by_number[c.number].id and c.span is not None
        and by_number[c.number].text[c.span[0] : c.span[1]].strip() != ""
        for c in answer.citations
    )  # fmt: skip


def quoted_exactly(answer) -> bool:  # type: ignore[no-untyped-def]
    """Evidence answers: every cited span is quoted word for word in the answer."""
    by_number = {p.number: p.hit for p in answer.passages}
    return valid_citations(answer) and all(
        " ".join(by_number[c.number].text[c.span[0] : c.span[1]].split()) in answer.text for c in answer.citations
    )


def answer_quality(answers: list, ids: list[str], long_answers: dict[str, str], relevant: dict) -> dict:  # type: ignore[type-arg]
    """Abstention, citation validity, evidence hit rate (a cited passage is of a document the qrels mark relevant:
    PubMedQA's own abstract) and ROUGE-L of a list of answers (one per question id)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    gold = {i: {doc for doc, grade in relevant.get(i, {}).items() if grade > 0} for i in ids}
    answered = [(a, i) for a, i in zip(answers, ids) if not a.abstained]
    return {
        "abstention_rate": 1 - len(answered) / len(ids),
        "valid_citation_share_of_answered": sum(valid_citations(a) for a, _ in answered) / max(1, len(answered)),
        "evidence_hit_rate_of_answered": sum(any(c.doc_id in gold[i] for c in a.citations) for a, i in answered)
        / max(1, len(answered)),
        "gold_abstract_retrieved": sum(any(p.hit.doc_id in gold[i] for p in a.passages)
                                       for a, i in zip(answers, ids)) / len(ids),
        "rougeL_f1_of_answered": statistics.mean(
            scorer.score(long_answers[i], a.text)["rougeL"].fmeasure for a, i in answered if i in long_answers
        ) if long_answers and answered else None,
    }  # fmt: skip


def evidence_bench(args: argparse.Namespace) -> None:
    dataset = load_beir(args.data, "test")
    ids = sorted(dataset.queries)[: args.limit]
    index_sources(args.store, [args.data / "corpus.jsonl"], model="minilm", show_progress=False)
    answers, seconds = [], []
    with open_store(args.store) as store:
        answerer = Answerer(
            Retriever(store), None, k=args.k, answer="extractive", max_sentences=args.max_sentences,
            min_sentence_score=args.min_sentence_score,
        )  # fmt: skip
        answerer.ask("warm up the encoders")
        for query_id in ids:
            started = time.perf_counter()
            answers.append(answerer.ask(dataset.queries[query_id]))
            seconds.append(time.perf_counter() - started)
    answered = [a for a in answers if not a.abstained]
    latency = percentiles(seconds)
    result = {
        "answer": "extractive", "questions": len(ids), "k": args.k, "max_sentences": args.max_sentences,
        "min_sentence_score": args.min_sentence_score,
        **answer_quality(answers, ids, long_answers_of(args.data), dataset.qrels),
        "quoted_exactly_share_of_answered": sum(quoted_exactly(a) for a in answered) / max(1, len(answered)),
        "latency_p50_ms": 1000 * latency["p50"],
        "latency_p99_ms": 1000 * latency["p99"],
        "examples": [{"question": a.question, "answer": a.text} for a in answers[:5]],
    }  # fmt: skip
    out = args.out or Path("bench/results/answer-extractive.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "examples"}, indent=2))


if __name__ == "__main__":
    main()

"""Grounded answers on PubMedQA test: RAG vs the same model closed-book, citations, and local generation speed.

Usage: python bench/bench_answer.py [--data ../shared/data/pubmedqa] [--generator smollm2] [--limit N]
Each test question is answered yes/no/maybe; the decision is the first of those words in the answer.
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
from ragtune.store import Store, index_sources

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
    parser.add_argument("--out", type=Path, default=Path("bench/results/answer.json"))
    args = parser.parse_args()

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
    result: dict = {"generator": generator.name, "questions": len(ids), "k": args.k, "load_s": load_s}
    with Store.open(args.store) as store:
        answerer = Answerer(
            Retriever(store), generator, k=args.k, min_relevance=0, max_new_tokens=args.max_new_tokens,
            instruction=INSTRUCTION,
        )  # fmt: skip
        started = time.perf_counter()
        rag = answerer.ask_many(questions, batch_size=args.batch_size)
        result["rag_seconds"] = time.perf_counter() - started
        started = time.perf_counter()
        closed: list[str] = []
        for start in range(0, len(questions), args.batch_size):
            batch = questions[start : start + args.batch_size]
            closed += generator.generate_batch([closed_book_messages(q, INSTRUCTION) for q in batch], args.max_new_tokens)
        result["closed_book_seconds"] = time.perf_counter() - started

        speed = []
        for question in questions[:10]:
            streamed = Answerer(Retriever(store), generator, k=args.k, min_relevance=0, max_new_tokens=64).stream(question)
            for _ in streamed:
                pass
            assert streamed.answer is not None
            speed.append(streamed.answer.timings)
        default_abstain = Answerer(Retriever(store), generator, k=args.k)  # the shipped threshold, retrieval side only
        relevances = [default_abstain.relevance(q, Retriever(store).search(q, k=1)[0]) for q in questions]

    truth = [gold[i] for i in ids]
    rag_decisions = [decision(a.text) for a in rag]
    closed_decisions = [decision(t) for t in closed]
    retrieved_gold = [any(p.hit.doc_id == i for p in a.passages) for a, i in zip(rag, ids)]
    result |= {
        "label_distribution": dict(Counter(truth)),
        "majority_class_accuracy": max(Counter(truth).values()) / len(truth),
        "rag_accuracy": sum(d == t for d, t in zip(rag_decisions, truth)) / len(truth),
        "closed_book_accuracy": sum(d == t for d, t in zip(closed_decisions, truth)) / len(truth),
        "rag_decisions": dict(Counter(str(d) for d in rag_decisions)),
        "closed_book_decisions": dict(Counter(str(d) for d in closed_decisions)),
        "rag_share_with_valid_citation": sum(bool(a.citations) for a in rag) / len(rag),
        "rag_invalid_citations_removed": sum(a.invalid_citations for a in rag),
        "rag_abstained_by_model": sum(a.abstained for a in rag),
        "gold_abstract_in_prompt": sum(retrieved_gold) / len(ids),
        "share_below_default_min_relevance": sum(r < 0.2 for r in relevances) / len(relevances),
        "time_to_first_token_s_median": statistics.median(t["first_token_s"] for t in speed),
        "tokens_per_s_median": statistics.median(t["tokens_per_s"] for t in speed),
        "examples": [
            {"question": q, "gold": t, "rag": a.text, "closed_book": c}
            for q, t, a, c in list(zip(questions, truth, rag, closed))[:5]
        ],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "examples"}, indent=2))


if __name__ == "__main__":
    main()

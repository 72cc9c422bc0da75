"""Calibrating the support check: PubMedQA's long answers (written by the papers' authors as conclusions, which the
abstract text given does not contain) against their own abstract (supported) and against another paper's abstract
(unsupported), each sentence's best cosine with the sentences of that abstract, as `check_support` computes it.

Usage: python bench/bench_support.py [--data ../shared/data/pubmedqa] [--limit 1000] [--out bench/results/support.json]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np

from ragtune.embedding import Embedder
from ragtune.generation.prompts import PromptPassage
from ragtune.generation.support import check_support
from ragtune.jsonl import iter_json_objects
from ragtune.models import resolve_model
from ragtune.types import Hit


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=Path("../shared/data/pubmedqa"))
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path("bench/results/support.json"))
    args = parser.parse_args()
    corpus = {str(r["_id"]): r["text"] for _, r in iter_json_objects(args.data / "corpus.jsonl", "'_id'")}
    answers = [(str(r["_id"]), r["metadata"]["long_answer"]) for _, r in iter_json_objects(args.data / "queries.jsonl", "'_id'")
               if r.get("metadata", {}).get("long_answer") and str(r["_id"]) in corpus][: args.limit]  # fmt: skip
    ids = [i for i, _ in answers]
    rng = random.Random(0)
    embedder = Embedder(resolve_model("minilm"), purpose="queries")
    started = time.perf_counter()
    own: list[float] = []
    other: list[float] = []
    for pid, text in answers:
        stranger = rng.choice([i for i in ids if i != pid])
        for doc, scores in ((pid, own), (stranger, other)):
            passage = PromptPassage(1, Hit(doc, doc, 0.0, corpus[doc], "", ""), corpus[doc], False)
            scores += [s.score for s in check_support(text, [passage], embedder, threshold=0.0)]
    seconds = time.perf_counter() - started
    own_a, other_a = np.array(own), np.array(other)
    rows = []
    for threshold in np.arange(0.3, 0.86, 0.05):
        rows.append({"threshold": round(float(threshold), 2), "own_supported": float(np.mean(own_a >= threshold)),
                     "other_supported": float(np.mean(other_a >= threshold))})  # fmt: skip
    result = {"date": time.strftime("%Y-%m-%d"), "answers": len(answers), "sentences": len(own), "seconds": seconds,
              "own_median": float(np.median(own_a)), "other_median": float(np.median(other_a)), "thresholds": rows}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

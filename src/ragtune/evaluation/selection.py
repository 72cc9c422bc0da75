"""Choose the system a user gets — which model (base, tuned, merged) and which fusion — on dev queries that played
no part in training, so that the loop never hands a user something worse on dev than what they already had.

Candidates: BM25; for each model, dense, hybrid RRF (k=60) and convex combinations with the dense weight on a grid.
The reference is what the user had before tuning: the better of BM25 and the base model's RRF hybrid. The best
candidate replaces it only when it scores at least `min_gain` nDCG@10 higher on dev *and* a paired t-test on the dev
queries gives p < `max_p` — on a handful of dev queries a lucky difference keeps what the user had. The test is
optimistic (the best of 34 is compared), so it is a floor against noise, not a proof of a gain; the test split says
how the choice did.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragtune.evaluation.dataset import BeirDataset
from ragtune.evaluation.runner import SystemSpec, evaluate_specs, system_label
from ragtune.evaluation.significance import PairedComparison, compare
from ragtune.retrieval import Fusion, SearchMode, SearchSettings

CONVEX_ALPHAS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
"""Dense weights tried for the convex fusion (0 is BM25 alone and 1 dense alone, both candidates already)."""
MIN_GAIN = 0.005
MAX_P = 0.1
METRIC = "ndcg@10"


@dataclass(frozen=True)
class Candidate:
    label: str
    model: str
    settings: SearchSettings
    score: float
    per_query: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "model": self.model, "settings": self.settings.to_json(), METRIC: self.score}


@dataclass(frozen=True)
class Selection:
    chosen: Candidate
    reference: Candidate
    best: Candidate
    candidates: list[Candidate]
    comparison: PairedComparison
    """The chosen system against the reference, on the dev queries."""
    reason: str
    dev_queries: int
    min_gain: float
    max_p: float

    def to_json(self) -> dict[str, Any]:
        return {
            "chosen": self.chosen.to_json(), "reference": self.reference.to_json(), "best": self.best.to_json(),
            "reason": self.reason, "dev_queries": self.dev_queries, "min_gain": self.min_gain, "max_p": self.max_p,
            "metric": METRIC,
            "chosen_vs_reference": {"delta": self.comparison.delta, "t_test_p": self.comparison.t_test_p,
                                    "randomization_p": self.comparison.randomization_p},
            "candidates": [c.to_json() for c in self.candidates],
        }  # fmt: skip

    def search_record(self) -> dict[str, Any]:
        """What a store records as its default search (`ragtune.store.record_search_settings`)."""
        return {**self.chosen.settings.to_json(), "reason": self.reason, "chosen_on": f"{self.dev_queries} dev queries"}


def candidate_specs(models: Sequence[str], alphas: Sequence[float] = CONVEX_ALPHAS) -> list[SystemSpec]:
    """BM25 first, then per model: dense, hybrid RRF and hybrid convex at each dense weight."""
    specs = [SystemSpec(models[0], SearchSettings(mode=SearchMode.bm25), "bm25")]
    for model in models:
        settings = [SearchSettings(mode=SearchMode.dense), SearchSettings(mode=SearchMode.hybrid)]
        settings += [SearchSettings(mode=SearchMode.hybrid, fusion=Fusion.convex, alpha=a) for a in alphas]
        specs += [SystemSpec(model, s, system_label(model, s)) for s in settings]
    return specs


def choose_system(
    candidates: Sequence[Candidate], base: str, min_gain: float = MIN_GAIN, max_p: float = MAX_P
) -> Selection:
    """Pick among scored candidates (the first on ties); `base` is the model the user had before tuning."""
    bm25 = next(c for c in candidates if c.settings.mode is SearchMode.bm25)
    base_hybrid = next(c for c in candidates if c.model == base and c.settings == SearchSettings())
    reference = bm25 if bm25.score > base_hybrid.score else base_hybrid
    best = max(candidates, key=lambda c: c.score)  # max keeps the first of equals
    gain = best.score - reference.score
    test = compare(METRIC, reference.per_query, best.per_query)
    if best is not reference and gain >= min_gain and test.t_test_p < max_p:
        chosen = best
        reason = (
            f"best on dev: {best.label} {best.score:.4f} vs {reference.label} {reference.score:.4f} "
            f"(+{gain:.4f}, p {test.t_test_p:.2g})"
        )
    else:
        chosen = reference
        why = f"by ≥ {min_gain}" if gain < min_gain else f"with p < {max_p} (+{gain:.4f}, p {test.t_test_p:.2g})"
        reason = (
            f"no system beat {reference.label} ({reference.score:.4f}) on dev {why}"
            f" (best: {best.label} {best.score:.4f}): kept what the user had"
        )
    comparison = compare(METRIC, reference.per_query, chosen.per_query)
    return Selection(
        chosen=chosen, reference=reference, best=best, candidates=list(candidates), comparison=comparison,
        reason=reason, dev_queries=len(reference.per_query), min_gain=min_gain, max_p=max_p,
    )  # fmt: skip


def select_system(
    dev: BeirDataset,
    models: Sequence[str],
    cache_dir: Path | None = None,
    min_gain: float = MIN_GAIN,
    show_progress: bool | None = None,
) -> Selection:
    """Score every candidate of `models` (the first is the base) on `dev` and choose (see `choose_system`)."""
    specs = candidate_specs(models)
    evaluation = evaluate_specs(dev, specs, k=100, cache_dir=cache_dir, metrics=(METRIC,), show_progress=show_progress)
    candidates = [
        Candidate(spec.label, spec.model, spec.settings, system.metrics[METRIC], system.per_query[METRIC])
        for spec, system in zip(specs, evaluation.systems, strict=True)
    ]
    return choose_system(candidates, models[0], min_gain)

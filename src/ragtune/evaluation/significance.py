"""Paired significance tests between two systems scored on the same queries (scipy implementations)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class PairedComparison:
    """System B against baseline A on one metric."""

    metric: str
    baseline: float
    system: float
    delta: float
    t_test_p: float
    randomization_p: float
    improved: int
    worse: int
    unchanged: int

    @property
    def significant(self) -> bool:
        return self.t_test_p < 0.05


def paired_t_test(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided paired t-test p-value; 1.0 when the two systems score every query the same, NaN (no test) with
    fewer than two queries."""
    if np.allclose(a, b):
        return 1.0
    if len(a) < 2:
        return float("nan")
    return float(stats.ttest_rel(b, a).pvalue)


def paired_randomization_test(a: np.ndarray, b: np.ndarray, resamples: int = 10_000, seed: int = 0) -> float:
    """Two-sided Fisher randomisation test on the mean difference (random sign flips of per-query deltas);
    exact when 2^n ≤ resamples. NaN (no test) with fewer than two queries."""
    if np.allclose(a, b):
        return 1.0
    if len(a) < 2:
        return float("nan")
    result = stats.permutation_test(
        (b, a),
        lambda x, y, axis: np.mean(x - y, axis=axis),
        permutation_type="samples",
        n_resamples=resamples,
        alternative="two-sided",
        vectorized=True,
        rng=np.random.default_rng(seed),
    )
    return float(result.pvalue)


def compare(metric: str, baseline: dict[str, float], system: dict[str, float]) -> PairedComparison:
    queries = sorted(baseline)
    a = np.array([baseline[q] for q in queries])
    b = np.array([system[q] for q in queries])
    delta = b - a
    return PairedComparison(
        metric=metric,
        baseline=float(a.mean()),
        system=float(b.mean()),
        delta=float(delta.mean()),
        t_test_p=paired_t_test(a, b),
        randomization_p=paired_randomization_test(a, b),
        improved=int((delta > 1e-9).sum()),
        worse=int((delta < -1e-9).sum()),
        unchanged=int((np.abs(delta) <= 1e-9).sum()),
    )

"""Fusing ranked lists from different retrievers."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TypeVar

Key = TypeVar("Key", bound=Hashable)


def reciprocal_rank_fusion(rankings: Sequence[Sequence[Key]], k: int = 60) -> list[tuple[Key, float]]:
    """RRF (Cormack et al., 2009): score(d) = Σ over lists of 1 / (k + rank of d), ranks starting at 1.

    Ties are broken by first appearance, so the result is deterministic.
    """
    if k < 0:
        raise ValueError("RRF k must be non-negative")
    scores: dict[Key, float] = {}
    for ranking in rankings:
        for rank, key in enumerate(ranking, start=1):
            scores[key] = scores.get(key, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda item: -item[1])


def _min_max(scored: Sequence[tuple[Key, float]]) -> dict[Key, float]:
    if not scored:
        return {}
    values = [s for _, s in scored]
    low, high = min(values), max(values)
    span = high - low
    return {key: (score - low) / span if span > 0 else 1.0 for key, score in scored}


def convex_combination(
    first: Sequence[tuple[Key, float]], second: Sequence[tuple[Key, float]], weight: float = 0.5
) -> list[tuple[Key, float]]:
    """`weight × minmax(first) + (1 − weight) × minmax(second)`; a key absent from a list scores 0 there."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError("the convex weight must be within [0, 1]")
    a, b = _min_max(first), _min_max(second)
    keys = list(dict.fromkeys([*a, *b]))
    fused = {key: weight * a.get(key, 0.0) + (1.0 - weight) * b.get(key, 0.0) for key in keys}
    return sorted(fused.items(), key=lambda item: -item[1])

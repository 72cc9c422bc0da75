from __future__ import annotations

import pytest

from ragtune.retrieval import convex_combination, reciprocal_rank_fusion


def test_rrf_by_hand() -> None:
    fused = dict(reciprocal_rank_fusion([["a", "b", "c"], ["b", "d"]], k=60))
    assert fused["a"] == pytest.approx(1 / 61)
    assert fused["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert fused["c"] == pytest.approx(1 / 63)
    assert fused["d"] == pytest.approx(1 / 62)
    assert [key for key, _ in reciprocal_rank_fusion([["a", "b", "c"], ["b", "d"]], k=60)] == ["b", "a", "d", "c"]


def test_rrf_matches_ranx() -> None:
    from ranx import Run, fuse

    dense = {"q": {"a": 0.9, "b": 0.8, "c": 0.7, "e": 0.1}}
    bm25 = {"q": {"c": 12.0, "d": 11.0, "a": 3.0}}
    reference = fuse(runs=[Run(dense), Run(bm25)], method="rrf", params={"k": 60}).to_dict()["q"]
    ours = dict(reciprocal_rank_fusion([list(dense["q"]), list(bm25["q"])], k=60))
    assert ours == pytest.approx(reference)


def test_convex_combination_min_max_normalises() -> None:
    fused = dict(convex_combination([("a", 0.9), ("b", 0.5), ("c", 0.1)], [("b", 20.0), ("d", 10.0)], weight=0.25))
    assert fused["a"] == pytest.approx(0.25 * 1.0)
    assert fused["b"] == pytest.approx(0.25 * 0.5 + 0.75 * 1.0)
    assert fused["c"] == pytest.approx(0.0)
    assert fused["d"] == pytest.approx(0.0)
    assert dict(convex_combination([("a", 1.0)], [("a", 5.0)], weight=1.0)) == {"a": 1.0}
    with pytest.raises(ValueError):
        convex_combination([], [], weight=1.5)

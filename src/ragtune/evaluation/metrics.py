"""IR metrics computed by ranx (trec_eval definitions), overall and per query."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

from ragtune.errors import missing_dependency
from ragtune.evaluation.dataset import Qrels

Run = dict[str, dict[str, float]]

DEFAULT_METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10", "map@100")
_EMPTY = "__ragtune_no_result__"


def _ranx():  # type: ignore[no-untyped-def]
    try:
        import ranx
    except ImportError as exc:
        raise missing_dependency("ranx", "ranx") from exc
    return ranx


def per_query_scores(qrels: Qrels, run: Run, metrics: Sequence[str] = DEFAULT_METRICS) -> dict[str, dict[str, float]]:
    """metric → query id → score. Every judged query is scored; a query the run misses scores 0."""
    ranx = _ranx()
    complete = {qid: (run.get(qid) or {_EMPTY: 0.0}) for qid in qrels}
    ranx_qrels = ranx.Qrels(qrels)
    ranx_run = ranx.Run(complete)
    with warnings.catch_warnings():  # numba's note on ranx's own nDCG kernel (an index cast), printed once per process
        warnings.filterwarnings("ignore", message=".*unsafe cast from uint64 to int64")
        scores = ranx.evaluate(ranx_qrels, ranx_run, list(metrics), return_mean=False, make_comparable=True)
    if len(metrics) == 1:
        scores = {metrics[0]: scores}
    order = list(ranx_qrels.keys())
    return {metric: dict(zip(order, map(float, values))) for metric, values in scores.items()}


def mean_scores(per_query: dict[str, dict[str, float]]) -> dict[str, float]:
    return {metric: sum(values.values()) / len(values) for metric, values in per_query.items()}

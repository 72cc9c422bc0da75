"""Evaluation on BEIR-format data: metrics, comparisons with significance, reports."""

from ragtune.evaluation.dataset import BeirDataset, load_beir
from ragtune.evaluation.metrics import DEFAULT_METRICS, per_query_scores
from ragtune.evaluation.report import write_report
from ragtune.evaluation.runner import Evaluation, SystemResult, evaluate_systems
from ragtune.evaluation.significance import PairedComparison, compare

__all__ = [
    "DEFAULT_METRICS",
    "BeirDataset",
    "Evaluation",
    "PairedComparison",
    "SystemResult",
    "compare",
    "evaluate_systems",
    "load_beir",
    "per_query_scores",
    "write_report",
]

"""Evaluation on BEIR-format data: metrics, comparisons with significance, reports."""

from ragtune.evaluation.dataset import BeirDataset, load_beir
from ragtune.evaluation.metrics import DEFAULT_METRICS, per_query_scores
from ragtune.evaluation.report import write_report
from ragtune.evaluation.runner import Evaluation, SystemResult, SystemSpec, evaluate_specs, evaluate_systems, system_label
from ragtune.evaluation.significance import PairedComparison, compare
from ragtune.evaluation.user_queries import read_user_queries

__all__ = [
    "DEFAULT_METRICS",
    "BeirDataset",
    "Evaluation",
    "PairedComparison",
    "SystemResult",
    "SystemSpec",
    "compare",
    "evaluate_specs",
    "evaluate_systems",
    "load_beir",
    "per_query_scores",
    "read_user_queries",
    "system_label",
    "write_report",
]

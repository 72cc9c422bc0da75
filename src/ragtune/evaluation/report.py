"""Writing an evaluation to disk: metrics.json, report.md, TREC run files and PNG plots."""

from __future__ import annotations

import json
import platform
from dataclasses import asdict
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from ragtune.evaluation.runner import Evaluation

_PACKAGES = ("ragtune", "torch", "sentence-transformers", "transformers", "faiss-cpu", "tantivy", "ranx", "scipy")


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in _PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def evaluation_json(evaluation: Evaluation) -> dict[str, Any]:
    return {
        "dataset": evaluation.dataset,
        "split": evaluation.split,
        "queries": evaluation.queries,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "settings": evaluation.settings,
        "versions": versions(),
        "warnings": evaluation.warnings,
        "systems": [
            {"label": s.label, "model": s.model, "mode": s.mode, "settings": s.settings, "metrics": s.metrics,
             "store": s.store}  # fmt: skip
            for s in evaluation.systems
        ],
        "baseline": evaluation.systems[0].label if evaluation.systems else None,
        "comparisons": {
            label: [asdict(c) | {"significant": c.significant} for c in rows]
            for label, rows in evaluation.comparisons.items()
        },
        "per_query": {s.label: s.per_query for s in evaluation.systems},
    }


def write_trec_run(path: Path, run: dict[str, dict[str, float]], tag: str) -> None:
    """`qid Q0 docid rank score tag`, ranks from 1 by descending score: re-score it with trec_eval."""
    with path.open("w", encoding="utf-8") as handle:
        for qid in sorted(run):
            ranked = sorted(run[qid].items(), key=lambda item: (-item[1], item[0]))
            for rank, (doc_id, score) in enumerate(ranked, start=1):
                handle.write(f"{qid} Q0 {doc_id} {rank} {score:.6f} {tag}\n")


def markdown_report(evaluation: Evaluation, data: dict[str, Any]) -> str:
    metrics = data["settings"]["metrics"]
    lines = [
        f"# ragtune evaluation: {Path(evaluation.dataset).name} ({evaluation.split})",
        "",
        f"{evaluation.queries} queries · {data['date']} · documents scored by their best passage · top {evaluation.k}",
        "",
        "| system | " + " | ".join(metrics) + " |",
        "|---|" + "---:|" * len(metrics),
    ]
    for system in evaluation.systems:
        lines.append(f"| {system.label} | " + " | ".join(f"{system.metrics[m]:.4f}" for m in metrics) + " |")
    if evaluation.comparisons:
        baseline = evaluation.systems[0].label
        lines += [
            "",
            f"## Against the baseline `{baseline}`",
            "",
            "Δ = system − baseline; p-values: two-sided paired t-test (scipy `ttest_rel`) and paired randomisation "
            "test (10,000 sign flips); * marks p < 0.05 (t-test). Per-query counts on each metric.",
            "",
            "| system | metric | Δ | t-test p | randomisation p | improved / worse / same |",
            "|---|---|---:|---:|---:|---|",
        ]
        for label, rows in evaluation.comparisons.items():
            for c in rows:
                star = "*" if c.significant else ""
                lines.append(
                    f"| {label} | {c.metric} | {c.delta:+.4f}{star} | {c.t_test_p:.4g} | {c.randomization_p:.4g} "
                    f"| {c.improved} / {c.worse} / {c.unchanged} |"
                )
    if evaluation.warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in evaluation.warnings]
    lines += ["", "## Settings", "", "```json", json.dumps(data["settings"], indent=2), "```"]
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in data["versions"].items()), ""]
    lines += ["Plots: `metrics.png`, `delta_*.png`. Runs (TREC format): `runs/`.", ""]
    return "\n".join(lines)


def plot_metrics(evaluation: Evaluation, path: Path, metrics: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(metrics) * max(1, len(evaluation.systems)) / 2), 4))
    width = 0.8 / max(1, len(evaluation.systems))
    for i, system in enumerate(evaluation.systems):
        xs = [j + i * width for j in range(len(metrics))]
        bars = ax.bar(xs, [system.metrics[m] for m in metrics], width, label=system.label)
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
    ax.set_xticks([j + width * (len(evaluation.systems) - 1) / 2 for j in range(len(metrics))], metrics)
    ax.set_ylim(0, 1.05)
    ax.set_title(f"{Path(evaluation.dataset).name} ({evaluation.split}, {evaluation.queries} queries)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_deltas(evaluation: Evaluation, directory: Path, metric: str = "ndcg@10") -> list[Path]:
    """One bar chart per system: its per-query change against the baseline system."""
    baseline = evaluation.systems[0]
    written = []
    for system in evaluation.systems[1:]:
        path = directory / f"delta_{_safe(system.label)}.png"
        plot_delta(baseline.per_query[metric], system.per_query[metric], f"{system.label} − {baseline.label}", path, metric)
        written.append(path)
    return written


def plot_delta(before: dict[str, float], after: dict[str, float], title: str, path: Path, metric: str) -> Path:
    """Per-query `after − before`, sorted: how many queries gained, lost, stayed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    deltas = sorted(after[q] - before[q] for q in before)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    colours = ["tab:green" if d > 0 else "tab:red" if d < 0 else "tab:gray" for d in deltas]
    ax.bar(range(len(deltas)), deltas, color=colours, width=1.0)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xlabel("queries, sorted by Δ")
    ax.set_ylabel(f"Δ {metric}")
    ax.set_title(f"{title}: per-query {metric}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _safe(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label)


def write_report(evaluation: Evaluation, out: Path) -> dict[str, Any]:
    """Write everything into `out`; returns the metrics.json content."""
    out.mkdir(parents=True, exist_ok=True)
    data = evaluation_json(evaluation)
    (out / "metrics.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    (out / "report.md").write_text(markdown_report(evaluation, data), encoding="utf-8")
    runs = out / "runs"
    runs.mkdir(exist_ok=True)
    for system in evaluation.systems:
        write_trec_run(runs / f"{_safe(system.label)}.trec", system.run, _safe(system.label))
    plot_metrics(evaluation, out / "metrics.png", data["settings"]["metrics"])
    if len(evaluation.systems) > 1:
        plot_deltas(evaluation, out)
    return data

"""The quickstart's report: before/after with significance, plots, training curves, timings, sample answers.

`report.md` (images beside it) and `report.html` (self-contained: images embedded as data URIs).
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragtune.evaluation.report import plot_delta
from ragtune.evaluation.significance import compare
from ragtune.quickstart.state import StepState
from ragtune.retrieval import SearchMode, SearchSettings

if TYPE_CHECKING:
    from ragtune.quickstart.pipeline import QuickstartConfig

TABLE_METRICS = ("ndcg@10", "recall@100", "mrr@10")


@dataclass(frozen=True)
class BeforeAfter:
    mode: str
    metric: str
    before: float
    after: float
    t_test_p: float | None
    randomization_p: float | None

    @property
    def delta(self) -> float:
        return self.after - self.before

    @property
    def significant(self) -> bool:
        return self.t_test_p is not None and self.t_test_p < 0.05


def before_after(metrics: dict[str, Any]) -> list[BeforeAfter]:
    """Base vs tuned per mode (BM25 does not change with the embedder: shown once, as the reference)."""
    systems = {s["label"]: s for s in metrics["systems"]}
    per_query = metrics["per_query"]
    rows: list[BeforeAfter] = []
    for metric in TABLE_METRICS:
        if "bm25" in systems:
            value = systems["bm25"]["metrics"][metric]
            rows.append(BeforeAfter("bm25", metric, value, value, None, None))
        for base, tuned in _base_and_tuned_labels(metrics).values():
            comparison = compare(metric, per_query[base][metric], per_query[tuned][metric])
            rows.append(
                BeforeAfter(
                    systems[base]["mode"], metric, systems[base]["metrics"][metric], systems[tuned]["metrics"][metric],
                    comparison.t_test_p, comparison.randomization_p,
                )
            )  # fmt: skip
    return rows


def _default_fusion(system: dict[str, Any]) -> bool:
    """Whether an evaluated system ran with its mode's default settings (hybrid = RRF k=60)."""
    return SearchSettings.from_json(system["settings"], "") == SearchSettings(mode=SearchMode(system["mode"]))


def _base_and_tuned_labels(metrics: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """mode → (label of the base model's system, label of the tuned model's system), default fusion (RRF k=60)."""
    base_model, tuned_model = metrics["settings"]["models"][:2]
    by_mode: dict[str, dict[str, str]] = {}
    for system in metrics["systems"]:
        if system["model"] in (base_model, tuned_model) and _default_fusion(system):
            by_mode.setdefault(system["mode"], {})[system["model"]] = system["label"]
    return {mode: (labels[base_model], labels[tuned_model]) for mode, labels in by_mode.items() if len(labels) == 2}


def training_curves(model_dir: Path, path: Path) -> Path | None:
    """Loss and dev nDCG@10 over steps, from the training record saved with the tuned model."""
    record_file = model_dir / "ragtune_training.json"
    if not record_file.exists():
        return None
    history = json.loads(record_file.read_text(encoding="utf-8")).get("log_history", [])
    loss = [(h["step"], h["loss"]) for h in history if "loss" in h and "step" in h]
    dev_key = next((k for h in history for k in h if k.endswith("ndcg@10") and k.startswith("eval_")), None)
    dev = [(h["step"], h[dev_key]) for h in history if dev_key and dev_key in h]
    if not loss and not dev:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, left = plt.subplots(figsize=(7, 3.6))
    if loss:
        left.plot(*zip(*loss), color="#0b57d0", label="training loss")
    left.set_xlabel("step")
    left.set_ylabel("loss", color="#0b57d0")
    if dev:
        right = left.twinx()
        right.plot(*zip(*dev), color="#c5221f", marker="o", label="dev nDCG@10")
        right.set_ylabel("dev nDCG@10", color="#c5221f")
    left.set_title("fine-tuning")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _p(value: float | None) -> str:
    return "–" if value is None or value != value else f"{value:.2g}"  # None: not compared; NaN: too few queries


def markdown_table(rows: list[BeforeAfter]) -> str:
    lines = ["| mode | metric | base | tuned | Δ | t-test p | randomisation p |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        star = "*" if r.significant else ""
        delta = "(reference)" if r.t_test_p is None else f"{r.delta:+.4f}{star}"
        lines.append(
            f"| {r.mode} | {r.metric} | {r.before:.4f} | {r.after:.4f} | {delta} | {_p(r.t_test_p)} | {_p(r.randomization_p)} |"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class TestRow:
    label: str
    role: str
    metrics: dict[str, float]
    delta: float | None
    t_test_p: float | None


def chosen_on_test(metrics: dict[str, Any], selection: dict[str, Any]) -> list[TestRow]:
    """BM25, the base hybrid and the chosen system on the test queries, the chosen one compared with the better of
    the other two (what the user had)."""
    systems = {s["label"]: s for s in metrics["systems"]}
    base_model = metrics["settings"]["models"][0]
    base_hybrid = next(s["label"] for s in metrics["systems"]
                       if s["model"] == base_model and s["mode"] == "hybrid" and _default_fusion(s))  # fmt: skip
    had = max(("bm25", base_hybrid), key=lambda label: systems[label]["metrics"]["ndcg@10"])
    chosen = selection["chosen"]["label"]
    roles = {"bm25": "BM25 alone", base_hybrid: "base model, hybrid RRF"}
    roles[chosen] = roles[chosen] + " — chosen on dev" if chosen in roles else "chosen on dev"
    rows = []
    for label, role in roles.items():
        delta = p = None
        if label == chosen:
            comparison = compare("ndcg@10", metrics["per_query"][had]["ndcg@10"], metrics["per_query"][label]["ndcg@10"])
            delta, p = comparison.delta, comparison.t_test_p
        rows.append(TestRow(label, role, systems[label]["metrics"], delta, p))
    return rows


DEV_KINDS = {
    "train": "{n} train queries held out from training: the same kind of questions as the test queries, so the "
             "choice can be trusted as far as their number allows (paired test below)",
    "user": "{n} questions you supplied (--queries), graded over passages: real questions, so the choice can be "
            "trusted as far as their number allows (paired test below)",
    "synthetic": "{n} held-out synthetic queries (sentences of the documents; each one's passage lost that sentence). "
                 "They are not user questions: BM25 and copied wording are favoured on them, so treat the choice as a "
                 "hint and check it on a few real questions (--queries FILE)",
    "generated": "{n} held-out generated questions (written by the generator about passages never trained on). They "
                 "are not user questions, and how well they predict real ones has not been measured (the round trip "
                 "keeps only questions the base search already answers), so treat the choice as a hint and check it "
                 "on a few real questions (--queries FILE)",
}  # fmt: skip


TEST_CAUTIONS = {
    "synthetic": "The test queries are held-out sentences of your documents, not user questions: the tables measure "
                 "how well a model finds a passage from one of its sentences, which has overstated the tuned model's "
                 "gain (on a consumer-health corpus: dense +0.079 on them, −0.053 on its real questions). Questions "
                 "of your own (--queries) are the measure to trust.",
    "generated": "The test queries are held-out generated questions, not user questions: they have overstated the "
                 "tuned model's gain (PubMedQA: dense +0.040 on them, −0.005 on 500 real questions; BENCHMARKS.md). "
                 "Questions of your own (--queries) are the measure to trust.",
}  # fmt: skip


def dev_models_section(selection: dict[str, Any]) -> list[str]:
    """Base, tuned and merged model on the user's own dev questions (dense and RRF hybrid): the before/after to trust
    when the test queries are synthetic."""
    scores = {c["label"]: c["ndcg@10"] for c in selection["candidates"]}
    models = list(dict.fromkeys(c["label"].split(":")[0] for c in selection["candidates"] if ":" in c["label"]))
    lines = [f"On your {selection['dev_queries']} questions (dev), nDCG@10 by model:", "",
             "| model | dense | hybrid RRF |", "|---|---:|---:|"]  # fmt: skip
    for model in models:
        lines.append(f"| {model} | {scores.get(f'{model}:dense', float('nan')):.4f} | "
                     f"{scores.get(f'{model}:hybrid', float('nan')):.4f} |")  # fmt: skip
    return lines + [""]


def chosen_section(selection: dict[str, Any], rows: list[TestRow], dev: str) -> list[str]:
    candidates = sorted(selection["candidates"], key=lambda c: -c["ndcg@10"])
    dev_kind = DEV_KINDS[dev].format(n=selection["dev_queries"])
    comparison = selection["chosen_vs_reference"]
    lines = [
        "## The system you get",
        "",
        f"**{selection['chosen']['label']}** — {selection['reason']}.",
        "",
        f"Chosen on {dev_kind}. On dev, chosen − {selection['reference']['label']}: {comparison['delta']:+.4f} nDCG@10 "
        f"(t-test p {_p(comparison['t_test_p'])}). It is recorded in its store as the default search "
        "(`ragtune search`, `ask` and `serve` use it; `ragtune info` shows it).",
        "",
        "Test queries (never used for any choice):",
        "",
        "| system | role | nDCG@10 | Recall@100 | MRR@10 | Δ nDCG@10 vs the better of the first two | t-test p |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        star = "*" if r.t_test_p is not None and r.t_test_p < 0.05 else ""
        delta = "" if r.delta is None else f"{r.delta:+.4f}{star}"
        lines.append(f"| {r.label} | {r.role} | {r.metrics['ndcg@10']:.4f} | {r.metrics['recall@100']:.4f} | "
                     f"{r.metrics['mrr@10']:.4f} | {delta} | {_p(r.t_test_p)} |")  # fmt: skip
    lines += ["", "Best dev candidates (of " + str(len(candidates)) + "):", "", "| system | dev nDCG@10 |", "|---|---:|"]
    lines += [f"| {c['label']} | {c['ndcg@10']:.4f} |" for c in candidates[:8]]
    return lines + [""]


def write_quickstart_report(
    out: Path, state: StepState, model_dir: Path, config: QuickstartConfig, command: str
) -> dict[str, str]:
    evaluation = state.get("re-index and evaluate")["data"]
    metrics = json.loads(Path(evaluation["metrics_file"]).read_text(encoding="utf-8"))
    rows = before_after(metrics)
    images: dict[str, Path | None] = {"every system, every metric": out / "evaluation" / "metrics.png"}
    for mode, (base, tuned) in _base_and_tuned_labels(metrics).items():
        images[f"per-query nDCG@10, tuned − base ({mode})"] = plot_delta(
            metrics["per_query"][base]["ndcg@10"], metrics["per_query"][tuned]["ndcg@10"], f"{tuned} − {base}",
            out / f"delta_tuned_vs_base_{mode}.png", "ndcg@10",
        )  # fmt: skip
    images["training curves"] = training_curves(model_dir, out / "training.png")
    images = {title: path for title, path in images.items() if path is not None and Path(path).exists()}
    timings = [(name, step["seconds"], step["summary"]) for name, step in state.steps.items()]
    answers = state.steps.get("answers", {}).get("data", {}).get("answers", [])
    extractive = state.steps.get("answers", {}).get("data", {}).get("mode") == "extractive"
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    reproduce = f"{command}"

    md = [
        f"# ragtune quickstart: {Path(metrics['dataset']).name}",
        "",
        f"{metrics['queries']} test queries · {date} · base `{config.base}` vs the model tuned here "
        f"(`{model_dir}`, model card in its README.md)",
        "",
        "## Before / after",
        "",
        markdown_table(rows),
        "",
        "Δ = tuned − base on the same queries; * = p < 0.05 (two-sided paired t-test); randomisation = paired sign-flip "
        "test. BM25 does not depend on the embedder and is shown as the reference.",
        "",
        "## Plots",
        "",
        *[f"![{title}]({Path(path).relative_to(out)})" for title, path in images.items()],
        "",
        "## Steps",
        "",
        "| step | seconds | result |",
        "|---|---:|---|",
        *[f"| {name} | {seconds:.0f} | {summary} |" for name, seconds, summary in timings],
        f"| **total** | {sum(s for _, s, _ in timings):.0f} | |",
        "",
    ]
    if answers:
        md += ["## Sample answers (the chosen system)", ""]
        if extractive:
            md += ["Quoted from the retrieved passages (the sentences closest to the question), each cited: the bundled "
                   "135M generator writes no citations. Name a generator with `--generator` to have answers written.", ""]  # fmt: skip
        for answer in answers:
            md += [f"**Q:** {answer['question']}", "", f"**A:** {answer['answer']}", ""]
            cited = {c["number"]: c for c in answer["citations"]}.values()
            md += [f"- [{c['number']}] {c['passage_id']} — {c['title']}" for c in cited] or ["- (no citation)"]
            md.append("")
    md += ["## Reproduce", "", "```", reproduce, "```", ""]
    dataset = state.get("dataset")["data"]
    if "choose system" in state.steps:
        selection = state.get("choose system")["data"]
        dev = dataset.get("dev") or ("train" if dataset["labelled"] else "synthetic")  # a run begun before "dev"
        section = chosen_section(selection, chosen_on_test(metrics, selection), dev)
        if dev == "user":
            section += dev_models_section(selection)
        at = md.index("## Before / after")
        md[at:at] = section
    if not dataset["labelled"]:  # the docs path's test queries are synthetic: say so above every table
        md[4:4] = [TEST_CAUTIONS[dataset.get("test", "synthetic")], ""]
    (out / "report.md").write_text("\n".join(md), encoding="utf-8")
    (out / "report.html").write_text(_html(md, images, out), encoding="utf-8")
    return {"markdown": str(out / "report.md"), "html": str(out / "report.html")}


def _html(md_lines: list[str], images: dict[str, Path], out: Path) -> str:
    """A small Markdown subset → HTML (headings, tables, lists, code, images inlined); enough for this report."""
    body: list[str] = []
    table: list[list[str]] = []
    in_code = False

    def flush_table() -> None:
        if not table:
            return
        head, *rest = table
        body.append("<table><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr>")
        body.extend("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in rest)
        body.append("</table>")
        table.clear()

    by_relative = {str(Path(p).relative_to(out)): p for p in images.values()}
    for line in "\n".join(md_lines).splitlines():
        if line.startswith("```"):
            flush_table()
            body.append("</pre>" if in_code else "<pre>")
            in_code = not in_code
            continue
        if in_code:
            body.append(html.escape(line))
            continue
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= set("-:") for c in cells):
                table.append(cells)
            continue
        flush_table()
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{_inline(line[level:].strip())}</h{level}>")
        elif line.startswith("![") and "](" in line:
            title, relative = line[2:].split("](", 1)
            path = by_relative.get(relative.rstrip(")"))
            if path is not None:
                data = base64.b64encode(Path(path).read_bytes()).decode()
                body.append(f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,{data}">'
                            f"<figcaption>{html.escape(title)}</figcaption></figure>")  # fmt: skip
        elif line.startswith("- "):
            body.append(f"<li>{_inline(line[2:])}</li>")
        elif line.strip():
            body.append(f"<p>{_inline(line)}</p>")
    flush_table()
    style = (
        "body{font:15px/1.5 system-ui,sans-serif;max-width:960px;margin:2rem auto;padding:0 1rem;color:#1d1d1f}"
        "table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ddd;padding:.3rem .6rem;text-align:right}"
        "td:first-child,th:first-child,td:nth-child(2){text-align:left}img{max-width:100%}"
        "pre{background:#f6f8fc;padding:.6rem;overflow:auto}figure{margin:1rem 0}"
    )
    return f"<!doctype html><html><head><meta charset='utf-8'><title>ragtune quickstart</title><style>{style}</style></head><body>{''.join(body)}</body></html>\n"


def _inline(text: str) -> str:
    import re

    escaped = html.escape(text)
    escaped = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", escaped)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", escaped)

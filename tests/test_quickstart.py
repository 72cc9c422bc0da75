"""The quickstart end to end on a tiny dataset with a tiny model: report files, before/after table, resume."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from chat_server import ChatServer, running
from ragtune.quickstart import Quickstart, QuickstartConfig, reproduce_command

TOPICS = {
    "pump": ["impeller", "cavitation", "seal", "bearing", "inlet", "pressure", "flow"],
    "bread": ["dough", "oven", "crust", "yeast", "flour", "knead", "bake"],
    "garden": ["tomato", "soil", "water", "seed", "compost", "sun", "prune"],
    "valve": ["gate", "throttle", "stem", "gasket", "closed", "open", "leak"],
}


def tiny_beir(root: Path) -> Path:
    rng = random.Random(0)
    corpus, queries, train, test = [], [], [], []
    for topic, words in TOPICS.items():
        for n in range(6):
            doc_id = f"{topic}{n}"
            sentences = [" ".join(rng.sample(words, 4)).capitalize() + f" {topic} note {n}." for _ in range(4)]
            corpus.append({"_id": doc_id, "title": f"{topic} {n}", "text": " ".join(sentences)})
            query_id = f"q-{doc_id}"
            queries.append({"_id": query_id, "text": f"{words[n]} {words[n + 1]} {topic}"})
            (test if n >= 4 else train).append(f"{query_id}\t{doc_id}\t1")
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(c) + "\n" for c in corpus))
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    for name, rows in (("train", train), ("test", test)):
        (root / "qrels" / f"{name}.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(rows) + "\n")
    return root


@pytest.fixture()
def chat():  # type: ignore[no-untyped-def]
    with running(ChatServer(lambda body: "The impeller is damaged by cavitation [1].")) as server:
        yield server


def test_quickstart_smoke_and_resume(tmp_path: Path, tiny_model_dir: Path, chat: ChatServer) -> None:
    dataset = tiny_beir(tmp_path / "tiny")
    config = QuickstartConfig(
        dataset=dataset, out=tmp_path / "out", base=str(tiny_model_dir), generator=chat.url, batch_size=8,
    )  # fmt: skip
    lines: list[str] = []
    result = Quickstart(config, reproduce_command(config), say=lines.append, show_progress=False).run()

    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Before / after" in report and "| dense | ndcg@10 |" in report and "| hybrid | ndcg@10 |" in report
    assert reproduce_command(config) in report
    page = (tmp_path / "out" / "report.html").read_text()
    assert "<table>" in page and "data:image/png;base64," in page and "src=\"evaluation/" not in page
    assert (tmp_path / "out" / "tuned-model" / "README.md").exists()
    assert len(result["answers"]["answers"]) == 3
    assert [line.split(":")[0] for line in lines if line.startswith("✓")] == [
        "✓ dataset", "✓ store", "✓ baseline", "✓ training data", "✓ fine-tune", "✓ re-index and evaluate", "✓ answers",
    ]
    assert any(line.startswith("  fine-tune:") and "steps planned (2 epochs)" in line for line in lines)
    tuned = next(line for line in lines if line.startswith("✓ fine-tune"))
    assert "2 epochs as planned" in tuned and "2 epochs as planned" in report

    again: list[str] = []
    Quickstart(config, reproduce_command(config), say=again.append, show_progress=False).run()
    assert all(line.startswith("[done before]") for line in again)


def test_interrupted_quickstart_resumes_after_the_finished_steps(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset = tiny_beir(tmp_path / "tiny")
    config = QuickstartConfig(dataset=dataset, out=tmp_path / "out", base=str(tiny_model_dir), generator=None,
                              batch_size=8)  # fmt: skip

    def interrupted(self: Quickstart) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(Quickstart, "_finetune", interrupted)
        with pytest.raises(KeyboardInterrupt):
            Quickstart(config, reproduce_command(config), say=lambda line: None, show_progress=False).run()
    lines: list[str] = []
    Quickstart(config, reproduce_command(config), say=lines.append, show_progress=False).run()
    skipped = [line for line in lines if line.startswith("[done before]")]
    assert [line.split(":")[0] for line in skipped] == [
        "[done before] dataset", "[done before] store", "[done before] baseline", "[done before] training data",
    ]
    assert any(line.startswith("✓ fine-tune") for line in lines)


def test_quickstart_cli_prints_the_table_and_marks_finished_steps(tmp_path: Path, tiny_model_dir: Path) -> None:
    from typer.testing import CliRunner

    from ragtune.cli import app

    dataset = tiny_beir(tmp_path / "tiny")
    command = ["quickstart", "--dataset", str(dataset), "--out", str(tmp_path / "out"), "--budget-minutes", "0.001",
               "--base", str(tiny_model_dir), "--generator", "none"]  # fmt: skip
    first = CliRunner().invoke(app, command)
    assert first.exit_code == 0, first.output
    assert "before / after" in first.stdout and "report.html" in first.stdout
    assert "CUT SHORT by --budget-minutes 0.001" in first.stderr  # an explicit cap that ends training is flagged
    assert "CUT SHORT" in (tmp_path / "out" / "report.md").read_text()
    second = CliRunner().invoke(app, command)
    assert second.exit_code == 0 and "[done before] fine-tune:" in second.stderr

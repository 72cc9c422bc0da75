"""The quickstart end to end on a tiny dataset with a tiny model: report files, before/after table, resume."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from chat_server import ChatServer, running
from conftest import unwrapped
from ragtune.errors import InputError, RagtuneError
from ragtune.faults import KILL_ENV
from ragtune.quickstart import Quickstart, QuickstartConfig, reproduce_command
from ragtune.retrieval import SearchSettings, store_search_settings
from ragtune.store import open_store

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


def test_quickstart_smoke_and_resume(
    tmp_path: Path, tiny_model_dir: Path, chat: ChatServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default run, each step in its own process: a step's process killed for real (SIGKILL while indexing)
    stops the run with one clear error, and the same command resumes after the finished steps."""
    dataset = tiny_beir(tmp_path / "tiny")
    config = QuickstartConfig(
        dataset=dataset, out=tmp_path / "out", base=str(tiny_model_dir), generator=chat.url, batch_size=8,
    )  # fmt: skip
    assert config.isolate_steps
    with monkeypatch.context() as patch:
        patch.setenv(KILL_ENV, "index-batch")
        with pytest.raises(RagtuneError, match="'store' step stopped: its process was killed by SIGKILL"):
            Quickstart(config, reproduce_command(config), say=lambda line: None, show_progress=False).run()
    lines: list[str] = []
    result = Quickstart(config, reproduce_command(config), say=lines.append, show_progress=False).run()
    assert lines[0].startswith("[done before] dataset") and lines[1] == "store …"
    assert any(line.startswith("✓ fine-tune") and "(mnrl)" in line for line in lines)  # labels: MNRL by default

    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Before / after" in report and "| dense | ndcg@10 |" in report and "| hybrid | ndcg@10 |" in report
    assert reproduce_command(config) in report
    assert "not user questions" not in report  # labelled test queries are real: no caution
    page = (tmp_path / "out" / "report.html").read_text()
    assert "<table>" in page and "data:image/png;base64," in page and "src=\"evaluation/" not in page
    assert (tmp_path / "out" / "tuned-model" / "README.md").exists()
    assert len(result["answers"]["answers"]) == 3
    assert [line.split(":")[0] for line in lines if line.startswith("✓")] == [
        "✓ store", "✓ baseline", "✓ training data", "✓ fine-tune", "✓ merge", "✓ choose system",
        "✓ re-index and evaluate", "✓ answers",
    ]
    _assert_chosen_system_reported(tmp_path / "out", report, dev_queries=2)  # 15 % of 16 train queries
    assert any(line.startswith("  fine-tune:") and "steps planned (2 epochs)" in line for line in lines)
    tuned = next(line for line in lines if line.startswith("✓ fine-tune"))
    assert "2 epochs as planned" in tuned and "2 epochs as planned" in report

    again: list[str] = []
    Quickstart(config, reproduce_command(config), say=again.append, show_progress=False).run()
    assert all(line.startswith("[done before]") for line in again)


def _assert_chosen_system_reported(out: Path, report: str, dev_queries: int) -> None:
    """The choice made on dev is in selection.json, recorded in the chosen store and shown beside BM25 and the base
    hybrid on the test queries."""
    selection = json.loads((out / "selection.json").read_text())
    assert selection["dev_queries"] == dev_queries
    labels = [c["label"] for c in selection["candidates"]]
    assert labels[0] == "bm25" and len(labels) == 1 + 3 * 11  # bm25; per model: dense, rrf, 9 convex weights
    best = max(c["ndcg@10"] for c in selection["candidates"])
    chosen, reference = selection["chosen"], selection["reference"]
    assert chosen["ndcg@10"] >= reference["ndcg@10"]  # never worse than what the user had, on dev
    assert chosen == reference or chosen["ndcg@10"] == best
    with open_store(selection["store"]) as store:
        assert store_search_settings(store) == SearchSettings.from_json(chosen["settings"], "")
        assert store.manifest.search["reason"] == selection["reason"]
    section = report[report.index("## The system you get") : report.index("## Before / after")]
    assert f"**{chosen['label']}**" in section and "| bm25 | BM25 alone" in section and "hybrid RRF" in section
    chosen_rows = [line for line in section.splitlines() if "chosen on dev |" in line]
    assert len(chosen_rows) == 1 and chosen_rows[0].startswith(f"| {chosen['label']} |")


def test_interrupted_quickstart_resumes_after_the_finished_steps(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset = tiny_beir(tmp_path / "tiny")
    config = QuickstartConfig(dataset=dataset, out=tmp_path / "out", base=str(tiny_model_dir), generator=None,
                              batch_size=8, isolate_steps=False)  # fmt: skip

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


def test_a_second_quickstart_in_the_same_folder_is_refused_while_the_first_runs(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    dataset = tiny_beir(tmp_path / "tiny")
    command = [sys.executable, "-m", "ragtune.cli", "quickstart", "--dataset", str(dataset), "--out",
               str(tmp_path / "out"), "--base", str(tiny_model_dir), "--generator", "none"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert first.stdout is not None
    for line in first.stdout:  # wait until the first run is training: before, a second one would train beside it
        if line.startswith("fine-tune"):
            break
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    still_running = first.poll() is None
    rest = first.stdout.read()
    assert first.wait(timeout=600) == 0, rest[-2000:]
    assert still_running  # the second run really met the first one
    assert second.returncode == 2 and "another quickstart is running in" in " ".join(second.stderr.split())
    assert "✓ re-index and evaluate" in rest and json.loads((tmp_path / "out" / "state.json").read_text())


def test_quickstart_cli_prints_the_table_and_marks_finished_steps(tmp_path: Path, tiny_model_dir: Path) -> None:
    from typer.testing import CliRunner

    from ragtune.cli import app

    dataset = tiny_beir(tmp_path / "tiny")
    command = ["quickstart", "--dataset", str(dataset), "--out", str(tmp_path / "out"), "--budget-minutes", "0.001",
               "--base", str(tiny_model_dir), "--generator", "none", "--in-process"]  # fmt: skip
    first = CliRunner().invoke(app, command)
    assert first.exit_code == 0, first.output
    assert "before / after" in first.stdout and "report.html" in unwrapped(first.stdout)
    assert "CUT SHORT by --budget-minutes 0.001" in unwrapped(first.stderr)  # an explicit cap that ends training: flagged
    assert "CUT SHORT" in (tmp_path / "out" / "report.md").read_text()
    second = CliRunner().invoke(app, command)
    assert second.exit_code == 0 and "[done before] fine-tune:" in second.stderr


def write_manual(docs: Path) -> Path:
    """Twelve short manual pages, three per topic, of five sentences 'The T A needs B checks every N weeks.'"""
    docs.mkdir()
    for topic, words in TOPICS.items():
        for n in range(3):
            sentences = [f"The {topic} {words[(n + i) % 7]} needs {words[(n + i + 2) % 7]} checks every {i + 2} weeks."
                         for i in range(5)]  # fmt: skip
            (docs / f"{topic}-{n}.md").write_text(f"# Care of the {topic} part {n}\n\n" + " ".join(sentences) + "\n")
    return docs


@pytest.mark.parametrize("dev", ["synthetic", "user"])
def test_docs_quickstart_holds_out_dev_and_test_queries_whose_sentence_left_their_passage(
    tmp_path: Path, tiny_model_dir: Path, dev: str
) -> None:
    docs = write_manual(tmp_path / "manual")
    (docs / "scan.pdf").write_bytes(b"%PDF-1.4 cut short")  # one unreadable file: named in the dataset step
    (docs / "minutes.docx").write_bytes(b"PK\x03\x04")  # a type not read: counted in the dataset step
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps({"query": f"how often to check the {topic}", "relevant": [f"{topic}-1.md"]})
                                 + "\n" for topic in TOPICS))  # fmt: skip
    config = QuickstartConfig(docs=docs, out=tmp_path / "out", base=str(tiny_model_dir), generator="smollm2",
                              batch_size=8, queries=questions if dev == "user" else None, isolate_steps=False,
                              loss="mnrl" if dev == "user" else None)  # fmt: skip
    lines: list[str] = []
    result = Quickstart(config, reproduce_command(config), say=lines.append, show_progress=False).run()
    loss = "mnrl" if dev == "user" else "gist"  # --docs trains with GIST unless told otherwise
    assert any(line.startswith("✓ fine-tune") and f"({loss})" in line for line in lines)
    assert ("--loss mnrl" in reproduce_command(config)) == (dev == "user")
    assert [line.split(":")[0] for line in lines if line.startswith("✓")] == [
        "✓ dataset", "✓ store", "✓ baseline", "✓ training data", "✓ fine-tune", "✓ merge", "✓ choose system",
        "✓ re-index and evaluate", "✓ answers",
    ]
    assert any("steps planned (1 epochs)" in line for line in lines)  # synthetic pairs: one epoch by default
    assert any(line.startswith("✓ dataset") and "1 file skipped as unreadable (scan.pdf: unreadable PDF" in line
               and "; not read: 1 .docx file" in line for line in lines)  # fmt: skip
    # the bundled generator: sample answers quote the passages (no generator loaded), each quote cited
    assert result["answers"]["mode"] == "extractive" and "by quoting the passages' best sentences" in lines[-1]
    for answer in result["answers"]["answers"]:
        assert answer["abstained"] or all(c["span_text"] in answer["answer"] for c in answer["citations"])
    held = tmp_path / "out" / "heldout"
    queries = {json.loads(line)["_id"]: json.loads(line)["text"] for line in (held / "queries.jsonl").open()}
    corpus = {json.loads(line)["_id"]: json.loads(line) for line in (held / "corpus.jsonl").open()}
    judged = {}
    for split in ("dev", "test"):
        rows = [line.split("\t") for line in (held / "qrels" / f"{split}.tsv").read_text().splitlines()[1:]]
        judged[split] = {qid: pid for qid, pid, _ in rows}
    assert len(judged["dev"]) >= 1 and len(judged["test"]) >= 1 and not set(judged["dev"]) & set(judged["test"])
    if dev == "user":  # the user's questions are the dev split, judged on their documents' passages
        assert sorted(judged["dev"]) == ["u0", "u1", "u2", "u3"] and judged["dev"]["u0"].endswith("pump-1.md#0")
        judged["dev"] = {}
    trained = {json.loads(line)["query"] for line in (tmp_path / "out" / "train-pairs.jsonl").open()}
    for qid, pid in {**judged["dev"], **judged["test"]}.items():
        record = corpus[pid]
        assert queries[qid] not in record["title"] + " " + record["text"]  # the query is no copy of its answer
        assert queries[qid] not in trained
    shortened = [r for r in corpus.values() if r["text"].count(".") != 5]  # each passage here has 5 sentences
    assert len(shortened) == sum(qid.startswith("q") for qid in queries)  # only the held-out queries' passages
    selection = json.loads((tmp_path / "out" / "selection.json").read_text())
    report = (tmp_path / "out" / "report.md").read_text()
    assert "The test queries are held-out sentences of your documents, not user questions" in report
    if dev == "user":  # base, tuned and merged on the user's questions: the before/after to trust
        assert selection["dev_queries"] == 4 and "4 questions you supplied" in report
        assert "On your 4 questions (dev), nDCG@10 by model" in report
        dense = {c["label"]: c["ndcg@10"] for c in selection["candidates"]}["tuned-model:dense"]
        assert f"| tuned-model | {dense:.4f} |" in report
    else:
        assert selection["dev_queries"] == len(judged["dev"])
        assert "held-out synthetic queries" in report and "not user questions" in report
        assert "by model" not in report
    assert "Quoted from the retrieved passages" in report


QUESTION_SYSTEM = "You write realistic search questions."


def question_or_answer(body: dict) -> str:
    """A generator endpoint for the quickstart: a question about the passage a question prompt ends with (built from
    its first sentence, 'The T A needs B checks …' → 'How often does the T A need B checks?'), or a cited answer."""
    if body["messages"][0]["content"] != QUESTION_SYSTEM:
        return "The impeller is damaged by cavitation [1]."
    passage = [m["content"] for m in body["messages"] if m["role"] == "user"][-1]
    found = re.search(r"The (\w+) (\w+) needs (\w+) checks", passage)
    return f"How often does the {found[1]} {found[2]} need {found[3]} checks?" if found else "Sorry, I cannot."


def test_docs_quickstart_trains_on_questions_a_generator_writes_in_the_form_of_the_users_examples(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """`--pairs generated --examples FILE`: the generator (here a loopback endpoint) is shown the user's questions and
    writes one about each passage; those questions are the training pairs and the held-out dev and test queries (each
    held-out passage stays whole: a generated question took nothing from it), and the report says what dev was."""
    docs = write_manual(tmp_path / "manual")
    examples = tmp_path / "examples.jsonl"
    asked = {"when is the pump seal checked": "pump-1.md", "how often to look at the valve gasket": "valve-2.md"}
    examples.write_text("".join(json.dumps({"query": q, "relevant": [f]}) + "\n" for q, f in asked.items()))
    lines: list[str] = []
    with running(ChatServer(question_or_answer)) as server:
        config = QuickstartConfig(docs=docs, out=tmp_path / "out", base=str(tiny_model_dir), generator=server.url,
                                  batch_size=8, pairs="generated", examples=examples, isolate_steps=False)  # fmt: skip
        Quickstart(config, reproduce_command(config), say=lines.append, show_progress=False).run()
    prompts = [body["messages"] for body in server.requests if body["messages"][0]["content"] == QUESTION_SYSTEM]
    assert len(prompts) == 12  # one question about each passage (fewer than GENERATED_PASSAGES)
    for messages in prompts:  # both examples, each after its passage, then the passage asked about
        assert sorted(m["content"] for m in messages if m["role"] == "assistant") == sorted(asked)
    assert "--pairs generated --examples" in reproduce_command(config)
    assert any(line.startswith("✓ dataset") and "questions by" in line and "modelled on 2 of your questions" in line
               for line in lines)  # fmt: skip
    out = tmp_path / "out"
    trained = [json.loads(line)["query"] for line in (out / "train-pairs.jsonl").open()]
    held = out / "heldout"
    queries = [json.loads(line)["text"] for line in (held / "queries.jsonl").open()]
    assert trained and queries and all(q.startswith("How often does the ") for q in trained + queries)
    assert not set(trained) & set(queries)
    assert all(r["text"].count(".") == 5 for r in map(json.loads, (held / "corpus.jsonl").open()))  # passages whole
    report = (out / "report.md").read_text()
    assert "held-out generated questions" in report and "has not been measured" in report
    assert "The test queries are held-out generated questions, not user questions" in report  # above every table


def test_generated_pairs_refuse_what_cannot_work_before_generating(tmp_path: Path, tiny_model_dir: Path) -> None:
    docs = write_manual(tmp_path / "manual")
    questions = tmp_path / "questions.jsonl"
    questions.write_text(json.dumps({"query": "when is the pump seal checked", "relevant": ["pump-1.md"]}) + "\n")
    for settings, message in (
        ({"docs": docs, "pairs": "llm"}, "--pairs llm: choose extractive or generated"),
        ({"pairs": "generated"}, "--pairs generated goes with --docs"),
        ({"docs": docs, "pairs": "generated", "generator": None}, "needs a generator to write the questions"),
        ({"docs": docs, "examples": questions}, "add --pairs generated"),
    ):
        with pytest.raises(InputError, match=message):
            Quickstart(QuickstartConfig(out=tmp_path / "o", **settings), "", say=print)  # type: ignore[arg-type]
    config = QuickstartConfig(docs=docs, out=tmp_path / "out", base=str(tiny_model_dir), pairs="generated",
                              generator="http://127.0.0.1:9/v1", examples=questions, queries=questions,
                              isolate_steps=False)  # fmt: skip
    with pytest.raises(InputError, match="1 question.* of --examples .* also in --queries .*'when is the pump seal"):
        Quickstart(config, "", say=lambda line: None, show_progress=False).run()
    assert not (tmp_path / "out" / "pairs.jsonl").exists()  # refused before the generator was asked anything
    broken = tmp_path / "broken.jsonl"  # a bad --queries line stops the run before the generator's long work
    broken.write_text(json.dumps({"query": "when is the pump seal checked"}) + "\n")
    config = QuickstartConfig(docs=docs, out=tmp_path / "out2", base=str(tiny_model_dir), pairs="generated",
                              generator="http://127.0.0.1:9/v1", queries=broken, isolate_steps=False)  # fmt: skip
    with pytest.raises(InputError, match="broken.jsonl:1: needs 'relevant'"):
        Quickstart(config, "", say=lambda line: None, show_progress=False).run()
    assert not (tmp_path / "out2" / "pairs.jsonl").exists()


def test_docs_of_which_none_can_be_read_stop_the_quickstart_naming_each(tmp_path: Path, tiny_model_dir: Path) -> None:
    docs = tmp_path / "exported"
    docs.mkdir()
    (docs / "notes.txt").write_bytes("caf\u00e9 au lait".encode("cp1252"))
    (docs / "scan.pdf").write_bytes(b"%PDF-1.4 cut short")
    config = QuickstartConfig(docs=docs, out=tmp_path / "out", base=str(tiny_model_dir), isolate_steps=False)
    with pytest.raises(InputError, match=r"no file under .*exported' could be read; 2 files skipped as unreadable "
                                         r"\(notes.txt: not UTF-8 text \(line 1, byte 3\).*scan.pdf: unreadable PDF"):
        Quickstart(config, reproduce_command(config), say=lambda line: None, show_progress=False).run()


def test_user_questions_name_documents_by_path_or_id_and_bad_lines_say_where(docs_dir: Path, tmp_path: Path) -> None:
    from ragtune.evaluation import read_user_queries
    from ragtune.store import index_sources

    store_dir = tmp_path / "store"
    index_sources(store_dir, [docs_dir], show_progress=False)
    with open_store(store_dir) as store:
        passages = {p.id: p.doc_id for p in store.iter_passages()}
        pump_passages = [pid for pid, doc in passages.items() if doc.endswith("guide/pumps.md")]
        valve_passage = next(pid for pid, doc in passages.items() if doc.endswith("guide/valves.txt"))
        good = tmp_path / "questions.jsonl"
        good.write_text(json.dumps({"query": "why is my impeller pitted", "relevant": ["guide/pumps.md"]}) + "\n"
                        + json.dumps({"text": "can a gate valve throttle", "relevant": [valve_passage]}) + "\n")  # fmt: skip
        assert read_user_queries(good, store, docs_dir) == [
            ("why is my impeller pitted", pump_passages), ("can a gate valve throttle", [valve_passage]),
        ]
        assert len(pump_passages) >= 1
        for line, message in (
            ({"query": "no answers"}, "needs 'relevant'"),
            ({"query": "x", "relevant": ["guide/missing.md"]}, "'guide/missing.md' is no passage id"),
            ({"relevant": ["guide/pumps.md"]}, "needs a non-empty 'query'"),
        ):
            bad = tmp_path / "bad.jsonl"
            bad.write_text(json.dumps({"query": "fine", "relevant": ["guide/pumps.md"]}) + "\n" + json.dumps(line) + "\n")
            with pytest.raises(InputError, match=rf"bad.jsonl:2: .*{message}"):
                read_user_queries(bad, store, docs_dir)
    with pytest.raises(InputError, match="--queries goes with --docs"):
        Quickstart(QuickstartConfig(queries=good, out=tmp_path / "o"), "", say=print)
    with pytest.raises(InputError, match="--loss triplet: the quickstart trains with one of mnrl, cached-mnrl, gist"):
        Quickstart(QuickstartConfig(docs=docs_dir, loss="triplet", out=tmp_path / "o"), "", say=print)

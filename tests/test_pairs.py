"""Training pairs without labels: inverse cloze, heading → section, LLM questions with the round-trip filter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chat_server import ChatServer, running
from conftest import write_docs
from ragtune.errors import InputError, StoreError
from ragtune.generation import load_generator
from ragtune.store import index_sources, open_store
from ragtune.training.examples import read_training_jsonl
from ragtune.training.pairs import PairMethod, PairsConfig, build_pairs, clean_question

pytestmark = pytest.mark.integration

DOCS = {
    "pumps.md": (
        "# Centrifugal pumps\n\nA centrifugal pump moves water by spinning an impeller. Cavitation damages the "
        "impeller when the inlet pressure drops too low. Bubbles collapse against the metal and pit it.\n\n"
        "## Seal maintenance\n\nReplace the mechanical seal every two years and check the bearings for noise."
    ),
    "bread.txt": (
        "Bake the sourdough bread at 230 degrees for forty minutes. Let the dough rise overnight in the fridge. "
        "Score the top with a razor before it goes into the oven."
    ),
    "valves.txt": "Gate valves are fully open or fully closed. Do not use a gate valve to throttle flow.",
}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pairs")
    index_sources(root / "store", [write_docs(root / "docs", DOCS)], model="minilm", show_progress=False)
    return root / "store"


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_inverse_cloze_takes_a_sentence_out_of_its_passage(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "ict.jsonl"
    report = build_pairs(store, out, PairsConfig(method=PairMethod.ict, per_passage=2), show_progress=False)
    found = rows(out)
    assert report.kept == len(found) >= 2
    for row in found:
        assert row["method"] == "ict" and row["query"] not in row["positive"]
    short = {r["query"]: r["positive"] for r in found if "/valves.txt" in r["passage_id"]}  # two sentences
    assert short == {"Gate valves are fully open or fully closed.": "valves Do not use a gate valve to throttle flow.",
                     "Do not use a gate valve to throttle flow.": "valves Gate valves are fully open or fully closed."}
    assert len(read_training_jsonl(out)) == len(found)  # feeds mine/finetune as it is


def test_inverse_cloze_serves_a_folder_of_two_sentence_manual_pages(tmp_path: Path) -> None:
    parts = ["pump", "valve", "boiler", "motor", "fan", "filter", "hose", "gauge", "seal", "belt", "tank", "heater"]
    pages = {f"manual/{part}.md": f"# Servicing the {part}\n\nInspect the {part} for wear every month. Replace the "
             f"{part} when the wear mark is reached." for part in parts}  # fmt: skip
    index_sources(tmp_path / "store", [write_docs(tmp_path / "docs", pages)], model="minilm", show_progress=False)
    report = build_pairs(tmp_path / "store", tmp_path / "ict.jsonl", PairsConfig(method=PairMethod.ict),
                         show_progress=False)  # fmt: skip
    found = rows(tmp_path / "ict.jsonl")
    assert report.kept == len(found) == 12
    for row in found:
        assert row["positive"].startswith("Servicing the") and row["query"] not in row["positive"]


def test_salient_inverse_cloze_prefers_the_sentence_that_restates_the_passage() -> None:
    import random

    from ragtune.training.pairs import ict_candidates
    from ragtune.types import Passage

    text = (
        "Cavitation damages centrifugal pump impellers. The trial ran for 14 weeks in 2019 at three sites. "
        "Impellers of centrifugal pumps showed cavitation pitting after low inlet pressure. Funding came from a grant."
    )
    passage = Passage(id="p#0", doc_id="p", ordinal=0, source="p.txt", title="Pump impeller cavitation", text=text)
    chosen = ict_candidates(passage, 2, random.Random(0), 3, 40, salient=True)
    assert [c.query for c in chosen] == [
        "Cavitation damages centrifugal pump impellers.",
        "Impellers of centrifugal pumps showed cavitation pitting after low inlet pressure.",
    ]  # the trial's dates and the funding restate nothing
    assert all(c.query not in c.positive for c in chosen)


def test_claim_form_states_the_finding_and_refuses_fragments() -> None:
    from ragtune.training.pairs import claim_form

    assert claim_form("CONCLUSIONS These results suggest that AMPK activation reduces fibrosis.") == (
        "AMPK activation reduces fibrosis."
    )
    assert claim_form("In conclusion, we have shown that mice lacking IRF2 are susceptible.") == (
        "Mice lacking IRF2 are susceptible."
    )
    assert claim_form("Results: mRNA levels fell by half.") == "mRNA levels fell by half."
    assert claim_form("AMPK activation reduces inflammation.") == "AMPK activation reduces inflammation."
    assert claim_form("cells from the aortic wall moved into the sub-aortic space.") is None  # cut by chunking
    assert claim_form("The trial enrolled 300 patients in") is None
    assert claim_form("167 HISTIDINE 168 Observations ...... ........ . . . . ..... .") is None


def test_pairs_know_their_documents_siblings(store: Path, tmp_path: Path) -> None:
    from ragtune.training.pairs import same_document_texts

    out = tmp_path / "heading.jsonl"
    build_pairs(store, out, PairsConfig(method=PairMethod.heading, min_query_words=1), show_progress=False)
    with open_store(store) as opened:
        siblings = same_document_texts(opened, out)
        pump_passages = [p for p in opened.iter_passages() if p.doc_id.endswith("/docs/pumps.md")]
    assert set(siblings["Seal maintenance"]) == {p.embedding_text() for p in pump_passages}


def test_headings_and_titles_become_queries_for_their_sections(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "heading.jsonl"
    build_pairs(store, out, PairsConfig(method=PairMethod.heading, min_query_words=1), show_progress=False)
    by_query = {row["query"]: row["positive"] for row in rows(out)}
    assert by_query["Seal maintenance"].startswith("Replace the mechanical seal")
    assert "Seal maintenance" not in by_query["Seal maintenance"]


def question_for(body: dict) -> str:
    prompt = body["messages"][-1]["content"]
    if "sourdough" in prompt:
        return "Question: How do I maintain the seal of a centrifugal pump?"  # wrong passage: the filter drops it
    if "impeller" in prompt or "seal" in prompt:
        return "1. What damages the impeller of a centrifugal pump?\nSome extra chatter."
    return "Can a gate valve throttle flow?"


def test_llm_questions_are_cleaned_and_round_trip_filtered(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "llm.jsonl"
    with running(ChatServer(question_for)) as server:
        generator = load_generator(server.url)
        config = PairsConfig(method=PairMethod.llm, round_trip_k=1, batch_size=2)
        report = build_pairs(store, out, config, generator, show_progress=False)
    queries = [row["query"] for row in rows(out)]
    assert "Can a gate valve throttle flow?" in queries
    assert "How do I maintain the seal of a centrifugal pump?" not in queries
    assert report.rejected_round_trip >= 1 and report.kept == len(queries)


def test_a_limit_draws_its_passages_from_the_whole_store_and_a_rerun_resumes_the_same_ones(
    store: Path, tmp_path: Path
) -> None:
    with open_store(store) as reader:
        in_order = [p.id for p in reader.iter_passages()]
    picked = []
    for seed in range(12):
        out = tmp_path / f"seed-{seed}.jsonl"
        config = PairsConfig(method=PairMethod.ict, limit=2, seed=seed)
        report = build_pairs(store, out, config, show_progress=False)
        done = (tmp_path / f"seed-{seed}.jsonl.done").read_text().split()
        assert report.passages_seen == 2 and len(set(done)) == 2
        assert [i for i in in_order if i in done] == done  # in store order
        picked.append(tuple(done))
        again = build_pairs(store, out, config, show_progress=False)
        assert again.passages_seen == 0 and again.passages_skipped_done == 2  # the same seed draws the same ones
    assert len(set(picked)) > 1 and set().union(*picked) == set(in_order)  # not always the first two


def test_settings_out_of_range_are_one_error_before_any_work(store: Path, tmp_path: Path) -> None:
    for wrong, option in [({"limit": 0}, "--limit"), ({"limit": -3}, "--limit"), ({"batch_size": 0}, "--batch-size"),
                          ({"round_trip": True, "round_trip_k": 0}, "--round-trip-k")]:
        with pytest.raises(InputError, match=option):  # before any passage is read or generated for
            config = PairsConfig(method=PairMethod.ict, **wrong)  # type: ignore[arg-type]
            build_pairs(store, tmp_path / "none.jsonl", config)
        assert not (tmp_path / "none.jsonl").exists()


def test_resume_skips_finished_passages(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "resume.jsonl"
    with running(ChatServer(question_for)) as server:
        generator = load_generator(server.url)
        config = PairsConfig(method=PairMethod.llm, round_trip=False, batch_size=1)
        first = build_pairs(store, out, PairsConfig(**{**config.__dict__, "limit": 2}), generator, show_progress=False)
        calls_after_first = len(server.requests)
        second = build_pairs(store, out, config, generator, show_progress=False)
    assert first.passages_seen == 2 and second.passages_skipped_done == 2
    assert len(server.requests) - calls_after_first == second.passages_seen
    assert len({row["query"] for row in rows(out)}) == len(rows(out))


def test_a_second_run_appending_to_the_same_file_is_refused_while_the_first_runs(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "llm.jsonl"
    with running(ChatServer(question_for, answer_delay=1.0)) as server:  # a slow generator: the first run lasts
        first = subprocess.Popen(
            [sys.executable, "-m", "ragtune.cli", "pairs", "--store", str(store), "--out", str(out), "--method", "llm",
             "--generator", server.url, "--no-round-trip", "--batch-size", "1"],
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while not server.requests and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server.requests, "the first run never asked for a question"
        config = PairsConfig(method=PairMethod.llm, round_trip=False, batch_size=1)
        with pytest.raises(StoreError, match="another `ragtune pairs` is appending to"):
            build_pairs(store, out, config, load_generator(server.url), show_progress=False)
        assert first.poll() is None  # the two met; before, both wrote every passage's pairs into the file
        assert first.wait(timeout=300) == 0, first.stderr.read()[-2000:] if first.stderr else ""
    written = [row["passage_id"] for row in rows(out)]
    with open_store(store) as opened:
        assert sorted(written) == sorted(p.id for p in opened.iter_passages())  # each passage's pair once


def test_a_line_cut_by_a_crash_is_dropped_on_resume(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "cut.jsonl"
    out.write_text('{"query": "old question?", "positive": "x", "passage_id": "p", "method": "ict"}\n{"query": "cu')
    build_pairs(store, out, PairsConfig(method=PairMethod.ict), show_progress=False)
    assert rows(out)[0]["query"] == "old question?"


def test_clean_question() -> None:
    assert clean_question('Question: "What damages pumps?" It is cavitation.', 3, 40) == "What damages pumps?"
    assert clean_question("Here is a question: How hot is the oven?", 3, 40) == "How hot is the oven?"
    assert clean_question("Pumps are machines that move water.", 3, 40) is None
    assert clean_question("Why?", 3, 40) is None
    # statements, where the user's examples are statements (claims, keyword queries): a question is off their form
    assert clean_question("Claim: Cavitation pits pump impellers. It is common.\nMore", 3, 40, question=False) == (
        "Cavitation pits pump impellers."
    )
    assert clean_question("Does cavitation pit impellers?", 3, 40, question=False) is None


def test_examples_that_are_statements_get_statements_back(store: Path, tmp_path: Path) -> None:
    """Users whose queries are claims (SciFact's) show claims: the prompt asks for a query in their form, not a
    question, and the generator's statements are kept; questions-as-examples keep the question prompt."""
    from ragtune.training.pairs import QuestionExample

    claims = (QuestionExample("Cavitation pits the impeller of centrifugal pumps.", DOCS["pumps.md"]),
              QuestionExample("Gate valves cannot throttle flow.", DOCS["valves.txt"]))  # fmt: skip

    def statement_about(body: dict) -> str:
        passage = body["messages"][-1]["content"]
        return "Sourdough dough rises overnight in the fridge." if "sourdough" in passage else "Pumps move water?"

    out = tmp_path / "claims.jsonl"
    with running(ChatServer(statement_about)) as server:
        config = PairsConfig(method=PairMethod.llm, examples=claims, round_trip=False, batch_size=4)
        assert not config.asks_questions
        report = build_pairs(store, out, config, load_generator(server.url), show_progress=False)
    assert [row["query"] for row in rows(out)] == ["Sourdough dough rises overnight in the fridge."]
    assert report.candidates == 1 and report.rejected_cleaning == report.passages_seen - 1 >= 2  # the '?' replies
    prompts = [m["content"] for body in server.requests for m in body["messages"] if m["role"] == "user"]
    assert prompts and all("a statement, not a question" in prompt for prompt in prompts)
    assert {body["messages"][0]["content"] for body in server.requests} == {"You write realistic search queries."}
    asked = (QuestionExample("Why is my impeller pitted?", DOCS["pumps.md"]), claims[1])
    assert PairsConfig(method=PairMethod.llm, examples=asked).asks_questions  # half questions: questions
    typed = (QuestionExample("how do I stop cavitation", DOCS["pumps.md"]),)  # a question typed without its '?'
    assert PairsConfig(method=PairMethod.llm, examples=typed).asks_questions


def test_bad_input(store: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="needs a generator"):
        build_pairs(store, tmp_path / "x.jsonl", PairsConfig(method=PairMethod.llm))
    empty = tmp_path / "empty"
    (empty / "docs").mkdir(parents=True)
    (empty / "docs" / "blank.txt").write_text("   ")
    index_sources(empty / "store", [empty / "docs"], model="minilm", show_progress=False)
    with pytest.raises(InputError, match="holds no passages"):
        build_pairs(empty / "store", tmp_path / "y.jsonl", PairsConfig(method=PairMethod.ict))


def test_pairs_cli(store: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ragtune.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["pairs", "--store", str(store), "--out", str(tmp_path / "p.jsonl"), "--method", "ict"])
    assert result.exit_code == 0, result.output
    assert "pairs (ict)" in result.stdout and rows(tmp_path / "p.jsonl")
    wrong = runner.invoke(app, ["pairs", "--store", str(store), "--out", str(tmp_path / "q.jsonl"), "--method", "x"])
    assert wrong.exit_code == 2 and "choose llm, ict or heading" in wrong.stderr
    nowhere = runner.invoke(app, ["pairs", "--store", str(tmp_path / "none"), "--out", str(tmp_path / "r.jsonl")])
    assert nowhere.exit_code == 2 and "does not exist" in nowhere.stderr


def test_cli_refuses_an_unknown_ict_sentence_choice(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ragtune.cli import app

    result = CliRunner().invoke(app, ["pairs", "--store", str(tmp_path), "--out", str(tmp_path / "p.jsonl"),
                                      "--method", "ict", "--ict-sentences", "best"])  # fmt: skip
    assert result.exit_code == 2 and "--ict-sentences best: choose random or salient" in result.stderr


def test_the_users_questions_are_the_generators_worked_examples(store: Path, tmp_path: Path) -> None:
    """`pairs --examples FILE`: each prompt shows --examples-per-prompt of the user's questions, each after a passage
    that answers it (named by file path, as quickstart --queries names them), in place of the built-in example; the
    same passage gets the same examples on every run. A bad file is one error before anything is generated."""
    from typer.testing import CliRunner

    from ragtune.cli import app

    asked = {"Why does my impeller look pitted?": "pumps.md", "Which valve can throttle flow?": "valves.txt",
             "How long should sourdough rise?": "bread.txt"}  # fmt: skip
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps({"query": q, "relevant": [str(store.parent / "docs" / f)]}) + "\n"
                                 for q, f in asked.items()))  # fmt: skip
    runner = CliRunner()
    prompts: list[list[dict]] = []
    for run in range(2):
        with running(ChatServer(question_for)) as server:
            result = runner.invoke(app, ["pairs", "--store", str(store), "--out", str(tmp_path / f"p{run}.jsonl"),
                                         "--generator", server.url, "--examples", str(questions),
                                         "--examples-per-prompt", "2", "--round-trip-k", "3"])  # fmt: skip
        assert result.exit_code == 0, result.output
        prompts.append(sorted(json.dumps(body["messages"]) for body in server.requests))  # sent concurrently: any order
        messages = [m for body in server.requests for m in body["messages"]]
        shown = [m["content"] for m in messages if m["role"] == "assistant"]
        assert shown and set(shown) <= set(asked) and "What causes cavitation" not in " ".join(shown)
        requests = len(server.requests)
        assert len(shown) == 2 * requests  # two examples in each prompt
        example_passages = [m["content"] for m in messages if m["role"] == "user"][::3]
        assert any("Bubbles collapse against the metal" in p or "throttle" in p or "sourdough" in p
                   for p in example_passages)  # fmt: skip
    assert prompts[0] == prompts[1]
    for bad, message in ((json.dumps({"query": "where is it?"}), "questions.jsonl:1: needs 'relevant'"),):
        questions.write_text(bad + "\n")
        result = runner.invoke(app, ["pairs", "--store", str(store), "--out", str(tmp_path / "bad.jsonl"),
                                     "--generator", "http://127.0.0.1:9/v1", "--examples", str(questions)])  # fmt: skip
        assert result.exit_code == 2 and message in result.stderr
        assert not (tmp_path / "bad.jsonl").exists()
    for options, message in ((["--method", "ict"], "they go with --method llm, not ict"),
                             (["--examples-per-prompt", "0"], "--examples-per-prompt 0: show at least 1")):  # fmt: skip
        questions.write_text(json.dumps({"query": "Which valve can throttle flow?", "relevant": [
            str(store.parent / "docs" / "valves.txt")]}) + "\n")  # fmt: skip
        result = runner.invoke(app, ["pairs", "--store", str(store), "--out", str(tmp_path / "bad.jsonl"),
                                     "--examples", str(questions), *options])  # fmt: skip
        assert result.exit_code == 2 and message in result.stderr, result.output

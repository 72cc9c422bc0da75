"""The whole loop in one call: index → baseline → training data → fine-tune → (reranker) → re-index → evaluate → answer.

Two paths. Labelled (a BEIR dataset; the default is the SciFact copy shipped in the repository): train qrels give the
pairs (less a dev share of the queries), test qrels the evaluation. Unlabelled (`docs`): inverse-cloze and heading
pairs are made from the passages (or, with `pairs="generated"`, questions the generator writes about them), and a
held-out share of them (never trained on) is written as a BEIR folder with a dev and a test split; each held-out
passage loses its query sentence there, as training positives do, so the held-out query is not a copy of its answer's
text.

After fine-tuning, the model is also merged half-and-half with the base, and the system the user gets — base, tuned
or merged model; dense, RRF or convex fusion with its weight, or BM25 alone — is chosen on the dev queries
(`ragtune.evaluation.selection`), recorded in its store as the default search, and shown beside BM25 and the base
hybrid on the test queries.

Each finished step is recorded in `out/state.json`; running the same command again skips what is done, and an
interrupted fine-tune resumes from its last checkpoint. Each step runs in a fresh process by default (a step reads
what it needs from the config and the records of the steps before it), so the memory one step used is given back
before the next begins.
"""

from __future__ import annotations

import json
import random
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragtune.child_process import run_in_child
from ragtune.corpus import ChunkingConfig, not_read_text
from ragtune.errors import InputError
from ragtune.evaluation import SystemSpec, evaluate_systems, load_beir, read_user_queries, write_report
from ragtune.evaluation.dataset import BeirDataset, split_queries, subset
from ragtune.evaluation.runner import Evaluation, eval_store_dir
from ragtune.fsutil import exclusive_lock
from ragtune.memory import release_memory
from ragtune.models import inference_precision, resolve_model
from ragtune.quickstart.state import StepState
from ragtune.datasets import shipped_dataset
from ragtune.retrieval import SearchMode, SearchSettings
from ragtune.store import index_sources, open_store, record_search_settings
from ragtune.training.examples import (
    TrainingExample, examples_from_dataset, judged_document_texts, read_training_jsonl, write_training_jsonl,
)  # fmt: skip

if TYPE_CHECKING:
    from ragtune.training.pairs import QuestionExample

SHIPPED_DATASET = shipped_dataset("scifact")
MODES = (SearchMode.bm25, SearchMode.dense, SearchMode.hybrid)
HELD_OUT_QUERIES = 200
"""Per held-out split (dev, test) of the unlabelled path, and at most a fifth of the passages in all."""
DEV_SHARE = 0.15
DEV_QUERIES = 200
"""The labelled path's dev split: this share of the train queries (at most this many), never trained on."""
MERGE_ALPHA = 0.5
DOCS_TRAIN_PAIRS = 3200
"""The unlabelled path trains on at most this many synthetic pairs (a seeded sample): 100 steps of 32 per epoch,
whatever the corpus size, so that mining and training cost the same on 3k or 30k passages."""
PAIR_SOURCES = ("extractive", "generated")
"""How `--docs` makes its pairs: inverse-cloze sentences and headings (fast), or questions the generator writes."""
GENERATED_PASSAGES = 8000
"""`--pairs generated` asks for a question about this many passages drawn at random (the measured configuration: on
MedQuAD about half kept their round trip, enough for `DOCS_TRAIN_PAIRS` and the held-out splits)."""
EXAMPLES_PER_PROMPT = 3
"""Of the user's `--examples`, how many each prompt shows (MedQuAD, 12 examples at 3 a prompt: BENCHMARKS.md)."""
DEV_DISTRACTORS = 300
"""Passages besides the dev queries' own in the periodic dev evaluation: enough to rank against, cheap to encode."""
SAMPLE_QUESTIONS = 3

QUICKSTART_LOSSES = ("mnrl", "cached-mnrl", "gist")
"""Losses that train on (query, passage, mined negative) rows alone: MNRL, its cached form, and GISTEmbed (in-batch
negatives the base model ranks above the positive are left out)."""


@dataclass(frozen=True)
class QuickstartConfig:
    dataset: Path | None = None
    docs: Path | None = None
    out: Path = Path("quickstart")
    epochs: float | None = None
    """Passes over the training pairs; None: 2 with labelled data, 1 with `--docs` (on synthetic pairs a second epoch
    took MedQuAD's tuned dense model from +0.015 to −0.033 nDCG@10 on its real questions and did not help SciFact's;
    BENCHMARKS.md)."""
    budget_minutes: float | None = None
    """An explicit cap on fine-tuning minutes; by default the planned epochs run whatever the machine's speed."""
    base: str = "minilm"
    generator: str | None = "smollm2"
    batch_size: int = 32
    loss: str | None = None
    """The fine-tuning loss, one of `QUICKSTART_LOSSES`; None: mnrl with labelled data, gist with `--docs` (on
    synthetic pairs MNRL's in-batch negatives are often near-copies of the positive's passage; GIST leaves out the
    ones the base model ranks above the positive. Same-day A/B, real questions: SciFact tuned dense −0.011 → +0.016,
    MedQuAD −0.018 → +0.009; BENCHMARKS.md)."""
    threads: int | None = None
    seed: int = 42
    queries: Path | None = None
    """Real questions with their expected documents (JSONL), the dev split of the `docs` path instead of synthetic ones."""
    pairs: str = "extractive"
    """One of `PAIR_SOURCES`: the `docs` path's training pairs from sentences and headings, or questions written by
    `generator` (slower: 35-65 min for `GENERATED_PASSAGES` with the bundled generator on 2 CPU cores)."""
    examples: Path | None = None
    """With `pairs="generated"`: a few real questions (the `queries` format) the generator is shown as worked examples,
    so its questions take their form. None may also be in `queries`: a question that shaped training cannot judge it."""
    isolate_steps: bool = True
    """Run each step in a fresh process (`ragtune.child_process`): all a step allocated goes back to the OS when it
    ends, so each step's peak starts from a small parent, not from what earlier steps left. False runs the steps in
    this process (tests that patch a step)."""

    @property
    def planned_epochs(self) -> float:
        return self.epochs if self.epochs is not None else (1.0 if self.docs else 2.0)

    @property
    def training_loss(self) -> str:
        return self.loss or ("gist" if self.docs else "mnrl")


Say = Callable[[str], None]


class Quickstart:
    """Runs the steps in order; `say` receives one line per step (the CLI prints them)."""

    def __init__(self, config: QuickstartConfig, command: str, say: Say, show_progress: bool | None = None) -> None:
        if config.dataset and config.docs:
            raise InputError("give --dataset or --docs, not both")
        if config.budget_minutes is not None and config.budget_minutes <= 0:
            raise InputError("--budget-minutes must be positive")
        if config.epochs is not None and config.epochs <= 0:
            raise InputError("--epochs must be positive")
        if config.loss is not None and config.loss not in QUICKSTART_LOSSES:
            raise InputError(f"--loss {config.loss}: the quickstart trains with one of {', '.join(QUICKSTART_LOSSES)}")
        if config.queries and not config.docs:
            raise InputError("--queries goes with --docs; a BEIR dataset's dev queries are held-out train queries")
        if config.pairs not in PAIR_SOURCES:
            raise InputError(f"--pairs {config.pairs}: choose {' or '.join(PAIR_SOURCES)}")
        if config.pairs == "generated" and not config.docs:
            raise InputError("--pairs generated goes with --docs; a BEIR dataset's pairs are its train queries")
        if config.pairs == "generated" and not config.generator:
            raise InputError("--pairs generated needs a generator to write the questions: drop --generator none, or "
                             "name one (the bundled smollm2, or an OpenAI-compatible endpoint's URL)")  # fmt: skip
        if config.examples and config.pairs != "generated":
            raise InputError("--examples are shown to the generator that writes questions: add --pairs generated")
        self.config = config
        self.out = config.out
        self.out.mkdir(parents=True, exist_ok=True)
        self.state = StepState(self.out / "state.json", command)
        self.say = say
        self.show_progress = show_progress
        self.stores = self.out / "stores"
        self.model_dir = self.out / "tuned-model"
        self.merged_dir = self.out / "merged-model"

    # -- bookkeeping ----------------------------------------------------------------------------------------------

    def step(self, name: str, work: Callable[[], tuple[str, dict[str, Any]]]) -> dict[str, Any]:
        """Run `work` (a method of this class that takes no arguments: it reads what it needs from the config and
        the earlier steps' records) unless a previous run finished it."""
        if self.state.done(name):
            saved = self.state.get(name)
            self.say(f"[done before] {name}: {saved['summary']}")
            return saved["data"]
        self.say(f"{name} …")
        started = time.monotonic()
        if self.config.isolate_steps:
            summary, data = run_in_child(f"the quickstart's '{name}' step", _run_step, self.config, self.state.command,
                                         self.show_progress, work.__name__, say=self.say)  # fmt: skip
        else:
            summary, data = work()
            release_memory()  # each step's freed buffers go back to the OS before the next step's peak
        seconds = time.monotonic() - started
        self.state.record(name, seconds, summary, data)
        self.say(f"✓ {name}: {summary} ({seconds:.0f} s)")
        return data

    # -- the loop -------------------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        busy = (f"another quickstart is running in '{self.out}'; wait for it to finish (then run this command again "
                "to resume from its steps), or give another --out")  # fmt: skip
        with exclusive_lock(self.out, busy):  # two runs in one folder would write the same models and stores
            return self._run_steps()

    def _run_steps(self) -> dict[str, Any]:
        dataset = self.step("dataset", self._dataset)
        if "dev_queries" not in dataset and dataset["labelled"]:
            raise InputError(f"'{self.out}' was begun by an older ragtune that kept no dev queries apart from "
                             "training; start again with a new --out folder")  # fmt: skip
        self.step("store", self._index)
        self.step("baseline", self._baseline)
        self.step("training data", self._training_data)
        self.step("fine-tune", self._finetune)
        self.step("merge", self._merge)
        chosen = self.step("choose system", self._choose)
        after = self.step("re-index and evaluate", self._reevaluate)
        answers: dict[str, Any] = {}
        if self.config.generator:
            answers = self.step("answers", self._answers)
        from ragtune.quickstart.report import write_quickstart_report

        paths = write_quickstart_report(self.out, self.state, self.model_dir, self.config, self.state.command)
        return {"evaluation": after, "chosen": chosen, "answers": answers, "report": paths}

    # -- what the steps share ---------------------------------------------------------------------------------------

    def _root(self) -> Path:
        """The BEIR folder the loop evaluates on: the dataset, or the docs path's held-out folder."""
        return Path(self.state.get("dataset")["data"]["root"])

    def _test(self) -> BeirDataset:
        return load_beir(self._root(), "test")

    def _store_dir(self, test: BeirDataset) -> Path:
        """The base model's store of the test corpus."""
        return eval_store_dir(self.stores, test, resolve_model(self.config.base).revision, ChunkingConfig())

    def _models(self) -> list[str]:
        return [self.config.base, str(self.model_dir), str(self.merged_dir)]

    # -- steps ----------------------------------------------------------------------------------------------------

    def _dataset(self) -> tuple[str, dict[str, Any]]:
        if self.config.docs is None:
            root = (self.config.dataset or SHIPPED_DATASET).resolve()
            if not (root / "corpus.jsonl").exists():
                raise InputError(
                    f"no BEIR dataset at '{root}' (corpus.jsonl missing); pass --dataset DIR or --docs DIR"
                )
            train, dev = split_queries(load_beir(root, "train"), DEV_SHARE, DEV_QUERIES, self.config.seed)
            summary = f"{root.name}: labelled, {len(train.queries)} train queries, {len(dev.queries)} more held out as dev"
            return summary, {"root": str(root), "labelled": True, "dev_queries": sorted(dev.queries), "dev": "train"}
        return self._heldout_from_docs()

    def _dev(self, root: Path) -> BeirDataset:
        """The dev queries: held-out train queries (labelled), or the held-out folder's dev split (docs)."""
        data = self.state.get("dataset")["data"]
        if data["labelled"]:
            return subset(load_beir(root, "train"), data["dev_queries"], split="dev")
        return load_beir(root, "dev")

    def _heldout_from_docs(self) -> tuple[str, dict[str, Any]]:
        """Index the documents, make pairs, hold some out as a BEIR test set; the rest are the training pairs."""
        docs = self.config.docs
        assert docs is not None
        if not docs.is_dir():
            raise InputError(f"--docs '{docs}' is not a folder")
        source_store = self.out / "docs-store"
        indexed = index_sources(source_store, [docs], model=self.config.base, show_progress=self.show_progress)
        passed_over = _unreadable_text(indexed.skipped) + (
            f"; not read: {not_read_text(indexed.files_not_read)}" if indexed.files_not_read else ""
        )
        if indexed.passages_total == 0:
            raise InputError(f"no file under '{docs}' could be read{passed_over}; fix those files or point --docs at "
                             "UTF-8 text, Markdown, HTML or PDF files with a text layer")  # fmt: skip
        user: list[tuple[str, list[str]]] = []  # the user's dev questions: read once, before any pair is made
        if self.config.queries:
            with open_store(source_store) as store:
                user = read_user_queries(self.config.queries, store, docs)
        pairs_file = self.out / "pairs.jsonl"
        made_by = self._make_pairs(source_store, pairs_file, user)
        rows = [json.loads(line) for line in pairs_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        if len(rows) < 10:
            raise InputError(
                f"only {len(rows)} training pairs could be made from '{docs}': the documents are too few or too short "
                "(inverse cloze needs passages of two or more sentences)"
            )
        rng = random.Random(self.config.seed)
        passages = sorted({row["passage_id"] for row in rows})
        if len(passages) < 3:
            raise InputError(f"pairs came from only {len(passages)} passages of '{docs}': too few to hold out dev and "
                             "test queries; add documents")  # fmt: skip
        rng.shuffle(passages)
        held = passages[: min(2 * HELD_OUT_QUERIES, max(2, len(passages) // 5))]
        one_row: dict[str, dict[str, Any]] = {}  # held-out passage → its query (an ict one where there is one)
        held_set = set(held)
        for row in rows:
            if row["passage_id"] in held_set and (row["passage_id"] not in one_row or row["method"] == "ict"):
                one_row[row["passage_id"]] = row
        with open_store(source_store) as store:
            corpus = [_heldout_record(p.id, p.title, p.text, one_row.get(p.id)) for p in store.iter_passages()]
        root = self.out / "heldout"
        (root / "qrels").mkdir(parents=True, exist_ok=True)
        _write_jsonl(root / "corpus.jsonl", corpus)
        queries = [(f"q{i}", one_row[pid]) for i, pid in enumerate(held)]
        half = len(queries) // 2
        judged = {"dev": [(qid, row["passage_id"]) for qid, row in queries[:half]],
                  "test": [(qid, row["passage_id"]) for qid, row in queries[half:]]}  # fmt: skip
        texts = [{"_id": qid, "text": row["query"]} for qid, row in queries]
        if self.config.queries:  # the user's questions are the dev split; the synthetic dev half is not used
            texts += [{"_id": f"u{i}", "text": query} for i, (query, _) in enumerate(user)]
            judged["dev"] = [(f"u{i}", pid) for i, (_, passages) in enumerate(user) for pid in passages]
        _write_jsonl(root / "queries.jsonl", texts)
        for split, pairs in judged.items():
            lines = "".join(f"{qid}\t{pid}\t1\n" for qid, pid in pairs)
            (root / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + lines, encoding="utf-8")
        train_rows = [row for row in rows if row["passage_id"] not in one_row]
        available = len(train_rows)
        if available > DOCS_TRAIN_PAIRS:
            train_rows = rng.sample(train_rows, DOCS_TRAIN_PAIRS)
        train = [TrainingExample(r["query"], r["positive"]) for r in train_rows]
        write_training_jsonl(self.out / "train-pairs.jsonl", train)
        summary = (
            f"{indexed.passages_total:,} passages (encoded {indexed.encoded:,} in {indexed.encode_seconds:.0f} s), "
            f"{len(rows)} synthetic pairs ({made_by}): {len(train_rows)} to train"
            + (f" (a sample of {available})" if available > len(train_rows) else "")
            + f"; {len(queries) - half} test "
            f"queries held out (with their passages' other pairs); dev: "
            + (f"your {len(user)} questions" if self.config.queries else f"{half} more held out")
            + passed_over
        )
        return summary, {
            "root": str(root), "labelled": False, "pairs": len(rows), "held_out": len(queries),
            "test": self._held_out_kind(), "dev": "user" if self.config.queries else self._held_out_kind(),
            "encoded": indexed.encoded, "encode_seconds": indexed.encode_seconds, "skipped": indexed.skipped,
        }  # fmt: skip

    def _held_out_kind(self) -> str:
        """What the held-out queries of the `docs` path are: document sentences, or generated questions."""
        return "generated" if self.config.pairs == "generated" else "synthetic"

    def _make_pairs(self, source_store: Path, pairs_file: Path, dev: list[tuple[str, list[str]]]) -> str:
        """Write the `docs` path's synthetic pairs (resuming a file an interrupted run left); returns how they were
        made, for the step's summary. `dev`: the user's dev questions, which no example may repeat."""
        from ragtune.training.pairs import PairMethod, PairsConfig, build_pairs

        if self.config.pairs == "extractive":
            for method in (PairMethod.ict, PairMethod.heading):
                build_pairs(source_store, pairs_file, PairsConfig(method=method), show_progress=self.show_progress)
            return "ict + heading"
        from ragtune.generation import load_generator

        shown = self._question_examples(source_store, dev)
        generator = load_generator(self.config.generator, precision="auto")  # bf16 where the device has it
        config = PairsConfig(method=PairMethod.llm, limit=GENERATED_PASSAGES, examples=shown,
                             examples_per_prompt=EXAMPLES_PER_PROMPT, seed=self.config.seed)  # fmt: skip
        report = build_pairs(source_store, pairs_file, config, generator, show_progress=self.show_progress)
        rate = f", {report.queries_per_second:.1f}/s" if report.queries_per_second else ""
        shape = f"modelled on {len(shown)} of your questions" if shown else "one built-in example"
        return f"questions by {generator.name}, {shape}; {report.kept} kept of {report.candidates} this run{rate}"

    def _question_examples(self, source_store: Path, dev: list[tuple[str, list[str]]]) -> tuple[QuestionExample, ...]:
        """The user's `--examples` for the generator's prompt; one that is also a `--queries` dev question is refused
        (a question the training data was modelled on would favour the tuned model on dev)."""
        from ragtune.training.pairs import read_question_examples

        if self.config.examples is None:
            return ()
        docs = self.config.docs
        assert docs is not None
        with open_store(source_store) as store:
            shown = read_question_examples(self.config.examples, store, docs)
        both = sorted({e.question for e in shown} & {query for query, _ in dev})
        if both:
            raise InputError(f"{len(both)} question(s) of --examples {self.config.examples} are also in --queries "
                             f"{self.config.queries} (first: {both[0]!r}): a question the generator was shown cannot "
                             "judge the model trained on its output; keep the two files apart")  # fmt: skip
        return shown

    def _index(self) -> tuple[str, dict[str, Any]]:
        test = self._test()
        store_dir = self._store_dir(test)
        report = index_sources(store_dir, [test.corpus_path], model=self.config.base, show_progress=self.show_progress)
        summary = (
            f"{report.passages_total:,} passages from {test.corpus_path.name}, encoded {report.encoded:,} "
            f"in {report.encode_seconds:.0f} s (the rest from the embedding cache)"
        )
        return summary, {
            "store": str(store_dir), "passages": report.passages_total, "seconds": report.seconds,
            "encoded": report.encoded, "encode_seconds": report.encode_seconds,
        }  # fmt: skip

    def _baseline(self) -> tuple[str, dict[str, Any]]:
        return self._evaluate([self.config.base], "baseline")

    def _reevaluate(self) -> tuple[str, dict[str, Any]]:
        chosen = self.state.get("choose system")["data"]["chosen"]
        settings = SearchSettings.from_json(chosen["settings"], str(self.out / "selection.json"))
        return self._evaluate(self._models(), "evaluation", [SystemSpec(chosen["model"], settings, chosen["label"])])

    def _evaluate(
        self, models: list[str], name: str, extra: list[SystemSpec] | None = None
    ) -> tuple[str, dict[str, Any]]:
        test = self._test()
        evaluation = evaluate_systems(
            test, models=models, modes=MODES, cache_dir=self.stores, show_progress=self.show_progress, extra=extra or []
        )
        write_report(evaluation, self.out / name)
        stores = [str(eval_store_dir(self.stores, test, resolve_model(m).revision, ChunkingConfig())) for m in models]
        encoding = evaluation.settings["encoding"]
        encoded = ", ".join(f"{_model_label(m, self.config.base)} {e['encoded']:,} in {e['encode_seconds']:.0f} s"
                            for m, e in encoding.items())  # fmt: skip
        return f"{_headline(evaluation)}; encoded: {encoded}", {
            "metrics_file": str(self.out / name / "metrics.json"), "stores": stores, "encoding": encoding,
        }  # fmt: skip

    def _training_data(self) -> tuple[str, dict[str, Any]]:
        from ragtune.training.mining import MiningConfig, mine_hard_negatives

        root, store_dir = self._root(), self._store_dir(self._test())
        never_negative = None
        dataset = self.state.get("dataset")["data"]
        if dataset["labelled"]:
            dev = set(dataset["dev_queries"])
            train = load_beir(root, "train")
            train = subset(train, [q for q in train.queries if q not in dev])
            examples, _ = examples_from_dataset(train)
            with open_store(store_dir) as store:  # no passage of a relevant document is a negative
                never_negative = judged_document_texts(store, train)
        else:
            from ragtune.training.pairs import same_document_texts

            examples = read_training_jsonl(self.out / "train-pairs.jsonl")
            with open_store(self.out / "docs-store") as source_store:  # a pair's sibling passages are no negatives
                never_negative = same_document_texts(source_store, self.out / "pairs.jsonl")
        model = resolve_model(self.config.base)
        with open_store(store_dir) as store:
            corpus = list(store.passage_texts())
        mined, report = mine_hard_negatives(  # the corpus's vectors come from the shared cache: no encoding
            examples, corpus, model, MiningConfig(num_negatives=1), never_negative=never_negative
        )
        write_training_jsonl(self.out / "train-mined.jsonl", mined)
        summary = f"{len(mined)} pairs, {report.with_negatives} with a mined hard negative"
        return summary, {"examples": len(mined), "with_negatives": report.with_negatives}

    def _finetune(self) -> tuple[str, dict[str, Any]]:
        from ragtune.training.finetune import LOW_MEMORY_TRAINING, FinetuneConfig, finetune

        examples = read_training_jsonl(self.out / "train-mined.jsonl")
        steps_per_epoch = max(1, len(examples) // self.config.batch_size)
        config = FinetuneConfig(
            base=self.config.base, epochs=self.config.planned_epochs, batch_size=self.config.batch_size,
            loss=self.config.training_loss, time_budget_minutes=self.config.budget_minutes, threads=self.config.threads, seed=self.config.seed,
            eval_steps=max(5, steps_per_epoch // 2), dev_distractors=DEV_DISTRACTORS,
            bf16=inference_precision() == "bf16", **LOW_MEMORY_TRAINING,
        )  # fmt: skip

        def estimate(step: int, planned: int, seconds_per_step: float) -> None:
            left = (planned - step) * seconds_per_step / 60
            epochs = self.config.planned_epochs
            self.say(f"  fine-tune: {planned} steps planned ({epochs:g} epochs), {seconds_per_step:.1f} s "
                     f"per step here: about {left:.0f} min to go")  # fmt: skip

        result = finetune(examples, self.model_dir, config, show_progress=bool(self.show_progress), on_step_time=estimate)
        before, after = result.base_dev.get("ndcg@10", float("nan")), result.tuned_dev.get("ndcg@10", float("nan"))
        if result.stopped_by == "time budget":
            ended = f"CUT SHORT by --budget-minutes {self.config.budget_minutes:g} (of {result.planned_steps} planned)"
        elif result.stopped_by == "early stopping":
            ended = f"stopped early: dev nDCG@10 stopped improving (of {result.planned_steps} planned)"
        else:
            ended = f"{self.config.planned_epochs:g} epochs as planned"
        summary = (
            f"{result.steps} steps ({self.config.training_loss}), {ended}, in {result.train_seconds / 60:.1f} min; "
            f"dev nDCG@10 {before:.4f} → {after:.4f}"
        )
        return summary, {
            "steps": result.steps, "planned_steps": result.planned_steps, "stopped_by": result.stopped_by,
            "epochs": self.config.planned_epochs, "train_seconds": result.train_seconds,
            "budget_minutes": self.config.budget_minutes, "loss": self.config.training_loss,
        }  # fmt: skip

    def _merge(self) -> tuple[str, dict[str, Any]]:
        from ragtune.training.finetune import merge_with_base

        merge_with_base(self.model_dir, self.config.base, MERGE_ALPHA, self.merged_dir)
        return f"{self.merged_dir.name}: weights {MERGE_ALPHA:g} × base + {1 - MERGE_ALPHA:g} × tuned", {
            "model": str(self.merged_dir), "alpha": MERGE_ALPHA,
        }  # fmt: skip

    def _choose(self) -> tuple[str, dict[str, Any]]:
        from ragtune.evaluation.selection import select_system

        dev = self._dev(self._root())
        selection = select_system(dev, self._models(), cache_dir=self.stores, show_progress=self.show_progress)
        chosen_model = selection.chosen.model
        store_dir = eval_store_dir(self.stores, dev, resolve_model(chosen_model).revision, ChunkingConfig())
        record_search_settings(store_dir, selection.search_record())
        data = selection.to_json() | {"store": str(store_dir)}
        (self.out / "selection.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        return f"{selection.chosen.label} — {selection.reason}", data

    def _answers(self) -> tuple[str, dict[str, Any]]:
        from ragtune.generation import Answerer, default_answer_mode, load_generator
        from ragtune.retrieval import Retriever

        test, store_dir = self._test(), Path(self.state.get("choose system")["data"]["store"])
        answer_mode = default_answer_mode(self.config.generator)  # evidence sentences with the bundled small model
        generator = load_generator(self.config.generator) if answer_mode == "generate" else None
        questions = [test.queries[q] for q in list(test.queries)[:SAMPLE_QUESTIONS]]
        with open_store(store_dir) as store:  # the chosen system: its store records the chosen search settings
            answerer = Answerer(Retriever(store), generator, k=3, max_new_tokens=96, answer=answer_mode)
            answers = answerer.ask_many(questions)
        data = [a.to_json() for a in answers]
        cited = sum(bool(a.citations) for a in answers)
        how = f"with {generator.name}" if generator else "by quoting the passages' best sentences"
        return f"{len(answers)} questions answered {how}, {cited} with citations", {"answers": data, "mode": answer_mode}


def _run_step(
    config: QuickstartConfig, command: str, show_progress: bool | None, method: str, say: Say
) -> tuple[str, dict[str, Any]]:
    """One step in a child process (`Quickstart.step` with `isolate_steps`): the child rebuilds the quickstart from
    its config and the state file, which holds every earlier step's record."""
    return getattr(Quickstart(config, command, say, show_progress), method)()  # type: ignore[no-any-return]


def _heldout_record(passage_id: str, title: str, text: str, row: dict[str, Any] | None) -> dict[str, str]:
    """A passage of the held-out corpus; one whose pair is held out reads as that pair's positive (an ict query's
    sentence removed; a heading's section without the heading, and without the title a heading query contains). A
    generated question took nothing from its passage, which stays whole."""
    if row is not None and row["method"] != "llm":
        positive = row["positive"]
        if row["method"] != "ict":
            return {"_id": passage_id, "title": "", "text": positive}
        text = positive[len(title) :].strip() if title and positive.startswith(title + " ") else positive
    return {"_id": passage_id, "title": title, "text": text}


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def _model_label(model: str, base: str) -> str:
    return "base" if model == base else Path(model).name.removesuffix("-model")


def _headline(evaluation: Evaluation) -> str:
    parts = [f"{s.label} {s.metrics['ndcg@10']:.4f}" for s in evaluation.systems]
    return "nDCG@10 " + " · ".join(parts)


def reproduce_command(config: QuickstartConfig) -> str:
    parts = ["ragtune", "quickstart"]
    if config.docs:
        parts += ["--docs", str(config.docs)]
    elif config.dataset:
        parts += ["--dataset", str(config.dataset)]
    parts += ["--out", str(config.out)]
    if config.epochs is not None:
        parts += ["--epochs", f"{config.epochs:g}"]
    if config.budget_minutes is not None:
        parts += ["--budget-minutes", f"{config.budget_minutes:g}"]
    if config.base != "minilm":
        parts += ["--base", config.base]
    if config.loss is not None:
        parts += ["--loss", config.loss]
    if config.generator != "smollm2":
        parts += ["--generator", config.generator or "none"]
    if config.queries:
        parts += ["--queries", str(config.queries)]
    if config.pairs != "extractive":
        parts += ["--pairs", config.pairs]
    if config.examples:
        parts += ["--examples", str(config.examples)]
    return shlex.join(parts)


def _unreadable_text(skipped: dict[str, str], shown: int = 3) -> str:
    """'; 2 files skipped as unreadable (a.pdf: encrypted PDF; b.txt: binary content)', or '' when none were."""
    if not skipped:
        return ""
    named = "; ".join(f"{Path(key).name}: {reason}" for key, reason in list(skipped.items())[:shown])
    more = f"; {len(skipped) - shown} more" if len(skipped) > shown else ""
    return f"; {len(skipped)} file{'s' if len(skipped) != 1 else ''} skipped as unreadable ({named}{more})"

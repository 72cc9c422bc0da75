"""Training mechanics on a tiny randomly initialised BERT: losses learn, cached = plain, resume, merge, bad data."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TEST_THREADS
from ragtune.errors import InputError
from ragtune.training.examples import (
    TrainingExample,
    duplicate_stats,
    examples_from_beir,
    read_training_jsonl,
    split_by_query,
    write_training_jsonl,
)
from ragtune.training.finetune import FinetuneConfig, carve_dev_set, finetune, merge_with_base
from ragtune.training.mining import CandidateSource, MiningConfig, mine_hard_negatives

TOPICS = [
    ("pump", "centrifugal pump impeller seal"), ("valve", "gate valve throttle flow"),
    ("bread", "sourdough bread oven crust"), ("tomato", "tomato garden sun water"),
    ("motor", "induction motor phase supply"), ("bearing", "ball bearing noise grease"),
    ("boiler", "steam boiler pressure safety"), ("filter", "water filter cartridge change"),
]  # fmt: skip


def toy_examples(negatives: bool = True) -> list[TrainingExample]:
    examples = []
    for i, (key, text) in enumerate(TOPICS):
        other = TOPICS[(i + 1) % len(TOPICS)][1]
        examples.append(TrainingExample(f"question about {key}", f"{text} manual", (f"{other} manual",) if negatives else ()))
    return examples


def _tiny_config(tiny_model_dir: Path, **overrides) -> FinetuneConfig:  # type: ignore[no-untyped-def]
    settings = dict(
        base=str(tiny_model_dir), epochs=8, batch_size=4, learning_rate=5e-3, max_seq_length=32, eval_steps=4,
        early_stopping_patience=100, dev_fraction=0.25, threads=TEST_THREADS,
    )  # fmt: skip
    return FinetuneConfig(**(settings | overrides))


def _losses(history: list[dict]) -> list[float]:
    return [row["loss"] for row in history if "loss" in row]


@pytest.mark.parametrize("loss", ["mnrl", "cached-mnrl", "gist", "triplet", "contrastive"])
def test_each_loss_trains_and_decreases(tiny_model_dir: Path, tmp_path: Path, loss: str) -> None:
    examples = toy_examples() * 2
    config = _tiny_config(tiny_model_dir, loss=loss)
    dev = carve_dev_set(toy_examples()[:2], [], 0, seed=0)
    result = finetune(examples, tmp_path / "model", config, dev=dev)
    history = _losses(result.log_history)
    assert len(history) >= 2
    assert history[-1] < history[0], history
    from sentence_transformers import SentenceTransformer

    reloaded = SentenceTransformer(str(tmp_path / "model"), device="cpu")
    assert reloaded.encode(["pump"]).shape == (1, 32)
    card = (tmp_path / "model" / "README.md").read_text()
    assert "Fine-tuned with ragtune" in card and f"Loss: `{loss}`" in card
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(("model.partial", "model.old"))]  # none left


def test_the_temperature_reaches_the_in_batch_losses_and_the_library_defaults_stay(tiny_model_dir: Path) -> None:
    from sentence_transformers import SentenceTransformer

    from ragtune.models import resolve_model
    from ragtune.training.finetune import build_loss

    model = SentenceTransformer(str(tiny_model_dir), device="cpu")
    base = resolve_model(str(tiny_model_dir))

    def built(loss: str, temperature: float | None):  # type: ignore[no-untyped-def]
        return build_loss(model, _tiny_config(tiny_model_dir, loss=loss, temperature=temperature), base)

    assert built("mnrl", None).scale == 20.0 and built("mnrl", 0.02).scale == pytest.approx(50.0)
    assert built("cached-mnrl", 0.1).scale == pytest.approx(10.0)
    assert built("gist", None).temperature == 0.01 and built("gist", 0.05).temperature == 0.05
    for wrong in (_tiny_config(tiny_model_dir, loss="triplet", temperature=0.05),
                  _tiny_config(tiny_model_dir, loss="mnrl", temperature=0.0)):  # fmt: skip
        with pytest.raises(InputError, match="--temperature"):
            wrong.check()


def test_matryoshka_wraps_the_loss(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = _tiny_config(tiny_model_dir, matryoshka_dims=(32, 16, 8), epochs=2)
    dev = carve_dev_set(toy_examples()[:2], [], 0, seed=0)
    result = finetune(toy_examples(), tmp_path / "model", config, dev=dev)
    assert result.steps > 0
    with pytest.raises(InputError, match="matryoshka"):
        finetune(toy_examples(), tmp_path / "m2", _tiny_config(tiny_model_dir, matryoshka_dims=(64,)), dev=dev)


def test_cached_mnrl_matches_mnrl_loss_and_gradients(tiny_model_dir: Path) -> None:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import losses

    model = SentenceTransformer(str(tiny_model_dir), device="cpu")
    model.max_seq_length = 32
    examples = toy_examples()
    features = [
        model.preprocess([e.query for e in examples]),
        model.preprocess([e.positive for e in examples]),
        model.preprocess([e.negatives[0] for e in examples]),
    ]

    def loss_and_grads(loss_module):  # type: ignore[no-untyped-def]
        model.zero_grad()
        value = loss_module([{k: v.clone() if torch.is_tensor(v) else v for k, v in f.items()} for f in features], None)
        value.backward()
        return value.item(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    plain, plain_grads = loss_and_grads(losses.MultipleNegativesRankingLoss(model))
    cached, cached_grads = loss_and_grads(losses.CachedMultipleNegativesRankingLoss(model, mini_batch_size=3))
    assert cached == pytest.approx(plain, rel=1e-5)
    assert len(plain_grads) == len(cached_grads)
    for a, b in zip(plain_grads, cached_grads):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-3)


def test_resume_continues_the_step_count(tiny_model_dir: Path, tmp_path: Path) -> None:
    dev = carve_dev_set(toy_examples()[:2], [], 0, seed=0)
    examples = toy_examples() * 2
    first = finetune(examples, tmp_path / "model", _tiny_config(tiny_model_dir, epochs=2), dev=dev)
    checkpoints = sorted((tmp_path / "model.checkpoints").glob("checkpoint-*"))
    assert checkpoints
    second = finetune(examples, tmp_path / "model", _tiny_config(tiny_model_dir, epochs=4), dev=dev)
    assert first.steps == 8 and second.steps == 16
    logged_steps = [row["step"] for row in second.log_history if "loss" in row]
    assert min(logged_steps) <= first.steps < max(logged_steps)
    assert len([row for row in second.log_history if "loss" in row and row["step"] <= first.steps]) > 0


def test_merge_base_endpoints(tiny_model_dir: Path, tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    dev = carve_dev_set(toy_examples()[:2], [], 0, seed=0)
    finetune(toy_examples(), tmp_path / "tuned", _tiny_config(tiny_model_dir, epochs=2), dev=dev)
    tuned = SentenceTransformer(str(tmp_path / "tuned"), device="cpu").state_dict()
    base = SentenceTransformer(str(tiny_model_dir), device="cpu").state_dict()
    at_zero = SentenceTransformer(str(merge_with_base(tmp_path / "tuned", str(tiny_model_dir), 0.0, tmp_path / "m0")))
    at_one = SentenceTransformer(str(merge_with_base(tmp_path / "tuned", str(tiny_model_dir), 1.0, tmp_path / "m1")))
    half = SentenceTransformer(str(merge_with_base(tmp_path / "tuned", str(tiny_model_dir), 0.5, tmp_path / "mh")))
    name = next(n for n, t in tuned.items() if t.is_floating_point() and not torch.equal(t, base[n]))
    assert torch.allclose(at_zero.state_dict()[name], tuned[name])
    assert torch.allclose(at_one.state_dict()[name], base[name])
    assert torch.allclose(half.state_dict()[name], (tuned[name] + base[name]) / 2)
    with pytest.raises(InputError):
        merge_with_base(tmp_path / "tuned", str(tiny_model_dir), 1.5, tmp_path / "bad")


def test_merging_in_a_fresh_process_draws_no_library_bars(tiny_model_dir: Path, tmp_path: Path) -> None:
    """`finetune --merge-base` and the quickstart's merge step run in their own process: no loading/writing bars."""
    import subprocess
    import sys

    script = (
        "import sys\nfrom ragtune.training.finetune import merge_with_base\n"
        "merge_with_base(sys.argv[1], sys.argv[1], 0.5, sys.argv[2])\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tiny_model_dir), str(tmp_path / "merged")],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "merged" / "modules.json").exists()
    assert "it/s]" not in done.stderr and "Writing model shards" not in done.stderr, done.stderr


def test_bad_training_files(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text("")
    with pytest.raises(InputError, match="holds no examples"):
        read_training_jsonl(path)
    path.write_text('{"query": "q", "positive": "p"}\n{"query": "q2"}\n')
    with pytest.raises(InputError, match=r"train\.jsonl:2: missing or empty 'positive'"):
        read_training_jsonl(path)
    path.write_text('{"query": "q", "positive": "p", "negatives": "n"}\n')
    with pytest.raises(InputError, match=r"train\.jsonl:1: 'negatives' must be a list"):
        read_training_jsonl(path)
    path.write_text('{"query": "q", "positive": "p"\n')
    with pytest.raises(InputError, match=r"train\.jsonl:1: invalid JSON"):
        read_training_jsonl(path)
    with pytest.raises(InputError, match="does not exist"):
        read_training_jsonl(tmp_path / "missing.jsonl")


def test_losses_that_need_negatives_say_so(tiny_model_dir: Path, tmp_path: Path) -> None:
    dev = carve_dev_set(toy_examples()[:2], [], 0, seed=0)
    with pytest.raises(InputError, match="needs negatives: run `ragtune mine`"):
        finetune(toy_examples(negatives=False), tmp_path / "m", _tiny_config(tiny_model_dir, loss="triplet"), dev=dev)


def test_jsonl_round_trip_duplicates_and_split(tmp_path: Path) -> None:
    examples = toy_examples() + [toy_examples()[0], TrainingExample("question about pump", "another pump text")]
    write_training_jsonl(tmp_path / "t.jsonl", examples)
    assert read_training_jsonl(tmp_path / "t.jsonl") == examples
    stats = duplicate_stats(examples)
    assert stats["duplicate_pairs"] == 1 and stats["queries_with_several_positives"] == 1
    train, dev = split_by_query(examples, 0.25, seed=1)
    assert {e.query for e in train}.isdisjoint({e.query for e in dev})
    assert len(train) + len(dev) == len(examples)


def test_held_out_queries_are_the_labelled_queries_split_by_query_keeps_from_training() -> None:
    from ragtune.evaluation.dataset import BeirDataset
    from ragtune.training.examples import held_out_queries

    examples = [TrainingExample(f"question {i}", f"answer {i}") for i in range(20)]
    queries = {f"q{i}": f"question {i}" for i in range(22)}  # q20, q21: in no example
    qrels = {qid: {"d": 1} for qid in queries if qid != "q3"}  # q3: no judgement
    dataset = BeirDataset(Path("."), "train", Path("corpus.jsonl"), queries, qrels, frozenset({"d"}), False)
    _, dev = split_by_query(examples, 0.25, seed=1)
    held = held_out_queries(dataset, examples, 0.25, seed=1)
    assert set(held.values()) == {e.query for e in dev} - {"question 3"}
    assert all(queries[qid] == text and qid in qrels for qid, text in held.items())


def test_examples_from_beir(tmp_path: Path) -> None:
    from test_evaluation import make_dataset

    root = make_dataset(tmp_path / "d")
    examples, corpus = examples_from_beir(root, "test")
    assert len(examples) == 5 and len(corpus) == 6
    assert TrainingExample("why is my impeller damaged", corpus["p1"]) in examples


def test_examples_leave_out_excluded_queries_and_judged_documents_passages_are_never_negatives(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    from ragtune.corpus import ChunkingConfig
    from ragtune.evaluation import load_beir
    from ragtune.store import index_sources, open_store
    from ragtune.training.examples import judged_document_texts

    root = tmp_path / "d"
    (root / "qrels").mkdir(parents=True)
    long_text = " ".join(f"Sentence {n} about impeller wear and cavitation damage in pumps." for n in range(12))
    docs = [{"_id": "long", "title": "Pumps", "text": long_text}, {"_id": "other", "title": "Bread", "text": "Knead."}]
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (root / "queries.jsonl").write_text('{"_id": "q1", "text": "impeller wear"}\n{"_id": "q2", "text": "bread"}\n')
    (root / "qrels" / "train.tsv").write_text("q1\tlong\t1\nq1\tother\t0\nq2\tother\t1\n")
    examples, _ = examples_from_beir(root, "train", exclude_queries=["q2"])
    assert [e.query for e in examples] == ["impeller wear"]
    store_dir = tmp_path / "store"
    index_sources(store_dir, [root / "corpus.jsonl"], model=str(tiny_model_dir),
                  chunking=ChunkingConfig(chunk_tokens=24, overlap_tokens=0), show_progress=False)  # fmt: skip
    with open_store(store_dir) as store:
        long_passages = [p.embedding_text() for p in store.iter_passages() if p.doc_id == "long"]
        excluded = judged_document_texts(store, load_beir(root, "train"))
    assert len(long_passages) > 2
    assert excluded == {"impeller wear": long_passages, "bread": ["Bread Knead."]}  # grade 0 is a fair negative


@pytest.mark.integration
@pytest.mark.parametrize("source", list(CandidateSource))
def test_mining_skips_positives_and_respects_margin(minilm, source: CandidateSource) -> None:  # type: ignore[no-untyped-def]
    examples = [
        TrainingExample("why is my impeller damaged", "Cavitation damages the pump impeller when inlet pressure drops."),
        TrainingExample("why is my impeller damaged", "Impeller erosion comes from cavitation bubbles."),
        TrainingExample("how to close a gate valve", "Turn the gate valve handwheel clockwise to close it."),
    ]
    corpus = [
        "Pumps move water with a spinning impeller.", "Pump impellers wear out over time.",
        "Gate valves are not for throttling.", "Bake bread at 230 degrees.", "Tomatoes need sun.",
        "Valve handwheels turn clockwise to close.", "Motors need a balanced supply.",
    ]  # fmt: skip
    config = MiningConfig(num_negatives=2, range_min=0, range_max=10, relative_margin=0.05, source=source)
    mined, report = mine_hard_negatives(examples, corpus, minilm, config)
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(minilm.path), device="cpu")
    positives = {e.positive for e in examples if e.query == examples[0].query}
    for example in mined:
        assert 1 <= len(example.negatives) <= 2
        assert not positives & set(example.negatives) or example.query != examples[0].query
        q, p, *negs = model.encode([example.query, example.positive, *example.negatives], normalize_embeddings=True)
        for n in negs:
            assert float(q @ n) <= 0.95 * float(q @ p) + 1e-5
    assert report.examples == 3 and report.with_negatives == 3


@pytest.mark.integration
def test_mining_matches_sentence_transformers_top_sampling(minilm, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """One positive per query, range_min 0: the same negatives as `util.mine_hard_negatives` (top sampling, relative
    margin). Where the rules differ on purpose (range_min, several positives) is said in `ragtune.training.mining`."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives as library_mining

    monkeypatch.setenv("RAGTUNE_PRECISION", "fp32")  # the library encodes in fp32
    topics = ["pump impeller cavitation", "gate valve throttling", "sourdough bread crust", "tomato garden watering",
              "electric motor bearings", "boiler pressure relief"]  # fmt: skip
    corpus = [f"{t.capitalize()} note {n}: " + " ".join(reversed(t.split()))[: 8 + 5 * n] + "." for t in topics
              for n in range(5)]  # fmt: skip
    examples = [TrainingExample(f"what about {t}", corpus[5 * i + 2]) for i, t in enumerate(topics)]
    config = MiningConfig(num_negatives=3, range_min=0, range_max=12, relative_margin=0.05)
    mined, report = mine_hard_negatives(examples, corpus, minilm, config)
    assert report.random_fills == 0
    model = SentenceTransformer(str(minilm.path), device="cpu")
    pairs = Dataset.from_dict({"query": [e.query for e in examples], "positive": [e.positive for e in examples]})
    theirs = library_mining(pairs, model, corpus=corpus, range_max=12, relative_margin=0.05, num_negatives=3,
                            sampling_strategy="top", output_format="n-tuple", verbose=False)  # fmt: skip
    expected = {row["query"]: (row["negative_1"], row["negative_2"], row["negative_3"]) for row in theirs}
    assert {e.query: e.negatives for e in mined} == expected


@pytest.mark.integration
def test_mining_never_picks_texts_marked_never_negative(minilm) -> None:  # type: ignore[no-untyped-def]
    query = "why is my impeller damaged"
    examples = [TrainingExample(query, "Cavitation damages the pump impeller when inlet pressure drops.")]
    sibling = "Pumps move water with a spinning impeller."  # cosine 0.43 to the query, the positive 0.54
    corpus = [sibling, "Bake bread at 230 degrees.", "Tomatoes need sun."]
    config = MiningConfig(num_negatives=1, range_min=0, range_max=10, relative_margin=0.0)
    plain, _ = mine_hard_negatives(examples, corpus, minilm, config)
    assert plain[0].negatives == (sibling,)  # the closest non-positive, unless told otherwise
    guarded, _ = mine_hard_negatives(examples, corpus, minilm, config, never_negative={query: [sibling]})
    assert len(guarded[0].negatives) == 1 and sibling not in guarded[0].negatives


def spy_activation_checkpointing(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the transformer models on which training turned activation checkpointing on."""
    from transformers import PreTrainedModel

    enabled: list[str] = []
    original = PreTrainedModel.activation_checkpointing_enable

    def enable(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        enabled.append(type(self).__name__)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(PreTrainedModel, "activation_checkpointing_enable", enable)
    return enabled


@pytest.mark.integration
def test_cli_mine_finetune_reindex(
    tiny_model_dir: Path, tmp_path: Path, docs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    import ragtune.memory
    from ragtune.cli import app
    from ragtune.store import index_sources

    releases: list[bool] = []
    release = ragtune.memory.release_memory
    monkeypatch.setattr(ragtune.memory, "release_memory", lambda: releases.append(release()) or True)
    lengths = spy_batch_lengths(monkeypatch)
    checkpointed = spy_activation_checkpointing(monkeypatch)

    runner = CliRunner()
    store = tmp_path / "store"
    index_sources(store, [docs_dir], show_progress=False)
    write_training_jsonl(tmp_path / "train.jsonl", toy_examples(negatives=False) * 2)
    mined = runner.invoke(
        app, ["mine", str(tmp_path / "train.jsonl"), "--out", str(tmp_path / "mined.jsonl"), "--store", str(store),
              "--negatives", "1", "--range-min", "0"],
    )  # fmt: skip
    assert mined.exit_code == 0, mined.output
    assert "with negatives" in mined.stdout
    assert any(e.negatives for e in read_training_jsonl(tmp_path / "mined.jsonl"))
    lengths.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tuned = runner.invoke(
            app, ["finetune", str(tmp_path / "mined.jsonl"), "--out", str(tmp_path / "model"), "--base",
                  str(tiny_model_dir), "--epochs", "1", "--batch-size", "4", "--max-seq-length", "32", "--threads",
                  str(TEST_THREADS), "--dev-fraction", "0.25", "--merge-base", "0.5", "--bf16", "--low-memory"],
        )  # fmt: skip
    assert tuned.exit_code == 0, tuned.output
    assert not [str(w.message) for w in caught if "checkpointing" in str(w.message)]  # asked for by its current name
    assert "dev nDCG@10" in tuned.stdout and "distinct queries" in tuned.stderr and (tmp_path / "model-merged" / "modules.json").exists()
    record = json.loads((tmp_path / "model" / "ragtune_training.json").read_text())
    assert record["config"]["loss"] == "mnrl" and record["data"]["dev_queries"] == 2 and record["config"]["bf16"]
    assert record["config"]["gradient_checkpointing"] and record["config"]["attention_dropout"] == 0.0
    assert checkpointed, "--low-memory trained without activation checkpointing"
    assert record["config"]["release_memory_each_step"] and len(releases) >= record["steps"]  # --low-memory: each step
    # --low-memory: every batch of the run (base and dev evaluations, 2 texts a training example) a multiple of 32
    # tokens long (64, capped by max length 32) — a few shapes, so memory stays flat; the model card's encodes after
    padded = [n for n in lengths if n % 32 == 0]
    assert len(padded) >= 2 * record["steps"] and lengths[: len(padded)] == padded
    assert "pad_to_multiple_of" not in (tmp_path / "model" / "sentence_bert_config.json").read_text()
    reindexed = runner.invoke(app, ["reindex", "--store", str(store), "--model", str(tmp_path / "model")])
    assert reindexed.exit_code == 0, reindexed.output
    bad = runner.invoke(app, ["finetune", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "m")])
    assert bad.exit_code == 2 and "does not exist" in bad.stderr


def spy_batch_lengths(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The token lengths of every text batch the transformer module prepares from now on."""
    from sentence_transformers.base.modules.transformer import Transformer

    lengths: list[int] = []
    preprocess = Transformer.preprocess

    def spy(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        features = preprocess(self, *args, **kwargs)
        lengths.append(int(features["input_ids"].shape[1]))
        return features

    monkeypatch.setattr(Transformer, "preprocess", spy)
    return lengths


def test_padded_batches_round_lengths_up_and_leave_no_setting_behind(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sentence_transformers import SentenceTransformer

    from ragtune.training.finetune import padded_batches

    model = SentenceTransformer(str(tiny_model_dir), device="cpu")
    lengths = spy_batch_lengths(monkeypatch)
    texts = ["short", "a somewhat longer text of words"]
    natural = model.encode(texts)
    with padded_batches(model, 64):
        padded = model.encode(texts)
    model.encode(texts)
    assert lengths[1] == 64 and lengths[0] == lengths[2] < 64
    model.max_seq_length = 96
    with padded_batches(model, 64):
        model.encode(texts)
    assert lengths[3] == 32  # truncation at 96 tokens: the largest multiple dividing both
    assert np.allclose(natural, padded, atol=1e-5)  # padding is masked: the same vectors
    model.save(str(tmp_path / "saved"))
    assert "pad_to_multiple_of" not in (tmp_path / "saved" / "sentence_bert_config.json").read_text()


def test_attention_dropout_is_set_on_every_layer(tiny_model_dir: Path) -> None:
    from sentence_transformers import SentenceTransformer

    from ragtune.training.finetune import set_attention_dropout

    model = SentenceTransformer(str(tiny_model_dir), device="cpu")
    assert set_attention_dropout(model, 0.0) == 2  # the tiny BERT's two layers
    assert all(m.dropout.p == 0.0 for n, m in model.named_modules() if n.endswith("attention.self"))


def test_examples_short_of_negatives_are_left_out_not_every_rows_negatives() -> None:
    from ragtune.training.examples import TrainingExample
    from ragtune.training.finetune import training_dataset

    full = [TrainingExample(f"q{i}", f"p{i}", (f"n{i}",)) for i in range(19)]
    with pytest.warns(UserWarning, match="1 of 20 examples have fewer than 1 negatives: left out"):
        data = training_dataset([*full, TrainingExample("q", "p")], "mnrl", 1)
    assert data.column_names == ["anchor", "positive", "negative_1"] and len(data) == 19
    half = full[:5] + [TrainingExample(f"x{i}", f"y{i}") for i in range(5)]
    with pytest.warns(UserWarning, match="training uses 0 per example"):
        assert training_dataset(half, "mnrl", 1).column_names == ["anchor", "positive"]

"""Encoding precision: bf16 (the default where the CPU supports it) stays close to fp32 and is unit-length."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ragtune.embedding import Embedder
from ragtune.errors import RagtuneError
from ragtune.models import ModelRef, inference_precision

TEXTS = ["Cavitation damages the impeller of a centrifugal pump.", "Bake the sourdough at 230 degrees.", "x"]


@pytest.mark.integration
def test_bf16_vectors_are_unit_length_and_agree_with_fp32(minilm: ModelRef) -> None:
    fp32 = Embedder(minilm, precision="fp32").encode(TEXTS)
    bf16 = Embedder(minilm, precision="bf16").encode(TEXTS)
    assert bf16.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(bf16, axis=1), 1.0, atol=1e-5)
    assert (fp32 * bf16).sum(axis=1).min() > 0.999


def test_precision_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGTUNE_PRECISION", "fp32")
    assert inference_precision() == "fp32"
    assert inference_precision("bf16") == "bf16"
    monkeypatch.setenv("RAGTUNE_PRECISION", "int4")
    with pytest.raises(RagtuneError, match="not one of fp32, bf16"):
        inference_precision()


VARIED = [
    "pump",
    "Cavitation damages the impeller of a centrifugal pump when the inlet pressure drops too low.",
    *[f"Passage {i}: " + "the seal and the bearings of pump number %d need checking. " % i * (i % 7 + 1) for i in range(40)],
]


@pytest.mark.integration
def test_the_openvino_path_matches_the_reference_path(minilm: ModelRef) -> None:
    """Every row (of lengths from 1 to ~100 tokens, over several length-sorted batches) in its own place, cos ≥ 0.999
    against plain fp32 torch; the converted model is made once and reused."""
    from ragtune.encoders import converted_model_path

    reference = Embedder(minilm, precision="fp32", backend="torch").encode(VARIED)
    for precision in ("fp32", "bf16"):
        fast = Embedder(minilm, precision=precision, backend="openvino")
        vectors = fast.encode(VARIED)
        assert fast.vector_kind == f"{precision}/openvino"
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        assert (vectors * reference).sum(axis=1).min() >= 0.999
        single = fast.encode_query(VARIED[5])
        assert float(single @ reference[5]) >= 0.999
    weights = converted_model_path(minilm).with_suffix(".bin")  # the .xml's time is touched at each use (the bound)
    made = (weights.stat().st_ino, weights.stat().st_mtime_ns)
    Embedder(minilm, backend="openvino").encode(["again"])
    assert (weights.stat().st_ino, weights.stat().st_mtime_ns) == made


@pytest.mark.integration
def test_tokenizing_ahead_gives_sentence_transformers_vectors_in_their_places(minilm: ModelRef) -> None:
    """The GPU path (threads tokenize the next batches while the device runs this one), run here on the CPU: the
    same vectors as sentence-transformers' `encode`, each row in its own place across batches of mixed lengths, with
    one tokenizer thread and with more threads than batches."""
    from ragtune.encoders import TorchEncoder
    from ragtune.models import load_sentence_transformer

    model = load_sentence_transformer(minilm.path, "fp32", "cpu")
    texts = [*VARIED, "an impeller longer than the model reads " * 60]  # cut at max_seq_length, as ST cuts it
    reference = model.encode(texts, batch_size=8)
    for threads in (1, 3, 16):
        ahead = TorchEncoder(model, batch_size=8, tokenize_ahead=True, threads=threads).encode(texts)
        assert ahead.shape == reference.shape
        np.testing.assert_allclose(ahead, reference, atol=1e-5)
    assert TorchEncoder(model, batch_size=8, tokenize_ahead=True).encode([]).shape == (0, reference.shape[1])


def test_the_encoder_backend_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from ragtune.encoders import encoder_backend

    monkeypatch.delenv("RAGTUNE_ENCODER", raising=False)
    assert encoder_backend() == "torch" and encoder_backend(purpose="queries") == "openvino"  # installed with ragtune
    monkeypatch.setenv("RAGTUNE_ENCODER", "torch")
    assert encoder_backend(purpose="queries") == "torch" and encoder_backend("openvino") == "openvino"
    monkeypatch.setenv("RAGTUNE_ENCODER", "onnx")
    with pytest.raises(RagtuneError, match="not one of torch, openvino"):
        encoder_backend()


def test_the_document_backend_is_the_one_timed_faster_here_measured_once(
    minilm: ModelRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ragtune import backend_choice

    monkeypatch.delenv("RAGTUNE_ENCODER", raising=False)
    backend_choice.choice_path().unlink(missing_ok=True)
    chosen = Embedder(minilm).backend
    [(key, record)] = json.loads(backend_choice.choice_path().read_text()).items()
    assert "bert-6x384" in key and set(record["seconds"]) == {"torch", "openvino"}
    assert chosen == record["backend"] == min(record["seconds"], key=record["seconds"].get)

    def never(*args: object) -> float:
        raise AssertionError("measured again")

    monkeypatch.setattr(backend_choice, "_seconds", never)
    assert Embedder(minilm).backend == chosen  # remembered
    monkeypatch.setenv("RAGTUNE_ENCODER", "torch")
    assert Embedder(minilm).backend == "torch"  # an explicit choice is never overridden
    assert Embedder(minilm, purpose="queries").backend == "torch"


def test_two_processes_measuring_at_once_leave_one_whole_choice_file(minilm: ModelRef, tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = dict(os.environ, RAGTUNE_CACHE=str(tmp_path / "cache"))
    env.pop("RAGTUNE_ENCODER", None)
    script = (
        "from ragtune.embedding import Embedder; from ragtune.models import resolve_model; "
        "print(Embedder(resolve_model('minilm')).backend)"
    )
    processes = [subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True)
                 for _ in range(2)]  # fmt: skip
    outputs = [process.communicate(timeout=300)[0].strip() for process in processes]
    assert all(process.returncode == 0 for process in processes)
    choices = json.loads((tmp_path / "cache" / "encoder-choice.json").read_text())
    assert len(choices) == 1 and all(output in ("torch", "openvino") for output in outputs)
    assert not list((tmp_path / "cache").glob("*.tmp"))


def test_an_unwritable_cache_folder_is_one_clear_error(
    minilm: ModelRef, tmp_path, monkeypatch: pytest.MonkeyPatch  # type: ignore[no-untyped-def]
) -> None:
    if os.geteuid() == 0:
        blocker = tmp_path / "not-a-folder"
        blocker.write_text("")  # root ignores permissions: a file where a folder must go fails for everyone
        monkeypatch.setenv("RAGTUNE_CACHE", str(blocker))
    else:
        (tmp_path / "ro").mkdir(mode=0o500)
        monkeypatch.setenv("RAGTUNE_CACHE", str(tmp_path / "ro"))
    with pytest.raises(RagtuneError, match="RAGTUNE_ENCODER=torch"):
        Embedder(minilm, backend="openvino")


def test_the_device_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from ragtune.models import inference_device

    monkeypatch.delenv("RAGTUNE_DEVICE", raising=False)
    assert inference_device() == ("cuda" if torch.cuda.is_available() else "cpu")
    assert inference_device("cpu") == "cpu"
    monkeypatch.setenv("RAGTUNE_DEVICE", "cpu")
    assert inference_device() == "cpu"
    with pytest.raises(RagtuneError, match="not one of cpu, cuda"):
        inference_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(RagtuneError, match="sees no GPU"):
            inference_device("cuda")


def test_vectors_of_another_device_are_another_kind(minilm: ModelRef) -> None:
    from ragtune.embedding import vector_kind

    embedder = Embedder(minilm, precision="fp32", backend="torch", device="cpu")
    assert embedder.vector_kind == "fp32/torch" == vector_kind("fp32", "torch", "cpu")
    assert vector_kind("bf16", "torch", "cuda") == "bf16/torch/cuda"  # never mixed with CPU vectors in the cache
    positions, vectors = next(embedder.encode_blocks(["a pump", "a valve"]))
    assert positions.tolist() == [0, 1] and np.allclose(vectors, embedder.encode(["a pump", "a valve"]))


@pytest.mark.integration
def test_a_query_embedder_encodes_a_recent_text_once(minilm: ModelRef, monkeypatch: pytest.MonkeyPatch) -> None:
    """Answering one question encodes it three times (search, relevance floor, evidence): the query embedder keeps
    the latest vectors, equal to fresh ones; documents are never remembered."""
    import ragtune.embedding as embedding
    from ragtune.encoders import TorchEncoder

    calls: list[list[str]] = []
    original = TorchEncoder.encode
    monkeypatch.setattr(TorchEncoder, "encode", lambda self, texts: calls.append(list(texts)) or original(self, texts))
    monkeypatch.setattr(embedding, "RECENT_QUERY_TEXTS", 4)
    reference = Embedder(minilm, precision="fp32", backend="torch").encode(TEXTS)
    queries = Embedder(minilm, precision="fp32", backend="torch", purpose="queries")
    calls.clear()
    np.testing.assert_allclose(queries.encode(TEXTS), reference, atol=1e-6)
    again = queries.encode([TEXTS[1], "a new question", TEXTS[1]])
    assert calls == [TEXTS, ["a new question"]]
    np.testing.assert_array_equal(again[0], again[2])
    np.testing.assert_allclose(again[0], reference[1], atol=1e-6)
    again[0][:] = 0  # the caller's copy
    np.testing.assert_allclose(queries.encode_query(TEXTS[1]), reference[1], atol=1e-6)
    queries.encode(["one", "two", "three"])  # four remembered: TEXTS[0] and TEXTS[2] are the least recent
    calls.clear()
    queries.encode([TEXTS[1], TEXTS[0]])
    assert calls == [[TEXTS[0]]]
    documents = Embedder(minilm, precision="fp32", backend="torch")
    calls.clear()
    documents.encode(TEXTS[:1])
    documents.encode(TEXTS[:1])
    assert calls == [TEXTS[:1], TEXTS[:1]]


def test_the_query_precision_setting(monkeypatch: pytest.MonkeyPatch, minilm: ModelRef) -> None:
    from ragtune.query_quantization import query_precision

    monkeypatch.delenv("RAGTUNE_QUERY_PRECISION", raising=False)
    assert query_precision() is None and query_precision("INT8") == "int8"
    monkeypatch.setenv("RAGTUNE_QUERY_PRECISION", "bf16")
    assert query_precision() == "bf16" and query_precision("auto") is None
    monkeypatch.setenv("RAGTUNE_QUERY_PRECISION", "int4")
    with pytest.raises(RagtuneError, match="not one of fp32, bf16, int8"):
        query_precision()
    with pytest.raises(RagtuneError, match="for queries on the CPU"):
        Embedder(minilm, precision="int8")  # passages keep float vectors
    with pytest.raises(RagtuneError, match="in OpenVINO, not torch"):
        Embedder(minilm, precision="int8", purpose="queries", backend="torch", calibration=["pump"])


def shipped_scifact_calibration() -> list[str]:
    from ragtune.datasets import shipped_dataset
    from ragtune.query_quantization import calibration_texts

    with (shipped_dataset() / "corpus.jsonl").open() as lines:
        return calibration_texts(f"{row['title']} {row['text']}" for row in map(json.loads, lines))


@pytest.mark.integration
def test_int8_queries_stay_close_to_the_float_ones_and_are_quantized_once(
    minilm: ModelRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Calibrated on snippets of SciFact abstracts: the int8 copy is refused when its vectors drift past the bound on
    the held-out snippets (nothing is kept), else made once per calibration text and reused."""
    from ragtune import query_quantization

    calibration = shipped_scifact_calibration()
    assert len(calibration) == 400 and all(6 <= len(text.split()) <= 32 for text in calibration)
    queries = ["what damages the impeller of a pump", "sourdough", "replace the seal", "x", VARIED[1],
               "Do not use a gate valve to throttle flow.", "tomato seedlings need light", "bearing noise"]
    with monkeypatch.context() as strict:
        strict.setattr(query_quantization, "MIN_MEAN_COSINE", 1.01)
        with pytest.raises(RagtuneError, match=r"int8 query vectors drift .* \(--query-precision\)"):
            Embedder(minilm, precision="int8", purpose="queries", calibration=calibration)
    from ragtune.encoders import converted_model_path

    assert not query_quantization.quantized_model_path(converted_model_path(minilm), calibration).exists()
    assert not list(converted_model_path(minilm).parent.glob("int8-*/partial-*"))
    int8 = Embedder(minilm, precision="int8", purpose="queries", calibration=calibration)
    assert int8.precision == "int8" and int8.vector_kind == "int8/openvino"
    vectors = int8.encode(queries)
    reference = Embedder(minilm, purpose="queries").encode(queries)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cosines = (vectors * reference).sum(axis=1)
    assert cosines.mean() >= 0.99 and cosines.min() >= 0.95  # the least alike: "x", one letter (0.965)
    assert all(int(np.argmax(reference @ row)) == i for i, row in enumerate(vectors))  # nearest its float twin

    def never(*args: object) -> float:
        raise AssertionError("quantized again")

    monkeypatch.setattr(query_quantization, "quantize_for_queries", never)
    again = Embedder(minilm, precision="int8", purpose="queries", calibration=calibration)
    np.testing.assert_array_equal(again.encode(queries), vectors)
    with pytest.raises(AssertionError, match="quantized again"):  # other texts: another copy
        Embedder(minilm, precision="int8", purpose="queries", calibration=calibration[:-1])


INT8_CHILD = """
import json, os, signal, sys
if sys.argv[1] == "no-nncf":
    sys.modules["nncf"] = None  # as if `ragtune[int8]` were not installed
if sys.argv[1] == "killed-while-saving":
    import openvino
    save = openvino.save_model
    def save_then_die(model, path, **kwargs):
        save(model, path, **kwargs)
        if "int8-" in str(path):
            os.kill(os.getpid(), signal.SIGKILL)  # after the partial files are written, before they are renamed
    openvino.save_model = save_then_die
from ragtune.datasets import shipped_dataset
from ragtune.embedding import Embedder
from ragtune.errors import RagtuneError
from ragtune.models import resolve_model
from ragtune.query_quantization import calibration_texts
with (shipped_dataset() / "corpus.jsonl").open() as lines:
    # 48 snippets, not the default 400: these children test saving, not quality, and each quantizes from scratch
    calibration = calibration_texts((row["title"] + " " + row["text"] for row in map(json.loads, lines)), count=48)
try:
    embedder = Embedder(resolve_model("minilm"), precision="int8", purpose="queries", calibration=calibration)
except RagtuneError as exc:
    print(exc)
    sys.exit(3)
print(json.dumps(embedder.encode(["what damages the impeller of a pump", "bearing noise"]).tolist()))
"""


def run_int8_children(modes: list[str], cache: Path) -> list[subprocess.CompletedProcess[str]]:
    """Run INT8_CHILD once per mode, all at the same time, with `cache` as the ragtune cache."""
    env = dict(os.environ, RAGTUNE_CACHE=str(cache), RAGTUNE_ENCODER="openvino")
    processes = [subprocess.Popen([sys.executable, "-c", INT8_CHILD, mode], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for mode in modes]  # fmt: skip
    outputs = [process.communicate(timeout=600) for process in processes]
    return [subprocess.CompletedProcess(p.args, p.returncode, out, err) for p, (out, err) in zip(processes, outputs)]


@pytest.mark.integration
def test_a_process_killed_while_saving_the_int8_copy_and_two_saving_at_once_leave_one_whole_copy(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Real processes on a fresh cache: one SIGKILLed between writing its int8 files and renaming them leaves no
    model (only partial files); two then quantizing at once both answer, leave one .xml/.bin pair of one process
    (no partial files, the dead one's removed too), and a later process loads it."""
    cache = tmp_path / "cache"
    [killed] = run_int8_children(["killed-while-saving"], cache)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    [int8_dir] = list(cache.glob("openvino/*/*/int8-*"))
    assert not (int8_dir / "model.xml").exists() and len(list(int8_dir.glob("partial-*"))) == 2
    both = run_int8_children(["quantize", "quantize"], cache)
    assert [child.returncode for child in both] == [0, 0], [child.stderr[-2000:] for child in both]
    assert sorted(path.name for path in int8_dir.iterdir()) == [".save.lock", "model.bin", "model.xml"]
    [later] = run_int8_children(["load"], cache)
    assert later.returncode == 0, later.stderr[-2000:]
    vectors = [np.array(json.loads(child.stdout)) for child in [*both, later]]
    for other in vectors[1:]:
        np.testing.assert_allclose(other, vectors[0], atol=2e-3)


def test_int8_queries_without_nncf_are_one_error_naming_the_extra(tmp_path) -> None:  # type: ignore[no-untyped-def]
    [child] = run_int8_children(["no-nncf"], tmp_path / "cache")
    assert child.returncode == 3, child.stderr[-2000:]
    assert "pip install 'ragtune[int8]'" in child.stdout and not list((tmp_path / "cache").glob("openvino/*/*/int8-*"))

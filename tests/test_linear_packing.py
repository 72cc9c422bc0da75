"""oneDNN-packed linear layers (bf16 encoding on the CPU): the same vectors as the plain layers, and only where
asked for."""

from __future__ import annotations

import numpy as np
import pytest

from ragtune.embedding import Embedder, vector_kind
from ragtune.errors import RagtuneError
from ragtune.linear_packing import PACK_ENV, pack_linear_layers, packs_linear_weights
from ragtune.models import ModelRef

NATIVE_BF16 = packs_linear_weights("bf16", "cpu")
needs_native_bf16 = pytest.mark.skipif(not NATIVE_BF16, reason="oneDNN has no native bf16 on this CPU: nothing packs")
TEXTS = [
    "pump",
    "Cavitation damages the impeller of a centrifugal pump when the inlet pressure drops too low.",
    *[f"Passage {i}: " + "the seal and the bearings of pump number %d need checking. " % i * (i % 9 + 1) for i in range(70)],
]


def test_packing_only_for_bf16_on_the_cpu_and_not_when_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not packs_linear_weights("fp32", "cpu")
    assert not packs_linear_weights("bf16", "cuda")
    assert vector_kind("bf16", "openvino", "cpu") == "bf16/openvino"
    assert vector_kind("fp32", "torch", "cpu") == "fp32/torch"
    assert vector_kind("bf16", "torch", "cpu") == ("bf16/torch-packed" if NATIVE_BF16 else "bf16/torch")
    monkeypatch.setenv(PACK_ENV, "0")
    assert not packs_linear_weights("bf16", "cpu")
    assert vector_kind("bf16", "torch", "cpu") == "bf16/torch"  # the cache keeps packed and plain vectors apart


@needs_native_bf16
def test_a_packed_layer_and_a_fused_gelu_compute_what_the_plain_ones_do() -> None:
    import torch

    torch.manual_seed(0)

    class FeedForward(torch.nn.Module):
        def __init__(self, activation: torch.nn.Module) -> None:
            super().__init__()
            self.dense = torch.nn.Linear(48, 96)
            self.intermediate_act_fn = activation
            self.out = torch.nn.Linear(96, 48, bias=False)

        def forward(self, hidden: torch.Tensor) -> torch.Tensor:
            return self.out(self.intermediate_act_fn(self.dense(hidden)))

    hidden = torch.randn(3, 7, 48, dtype=torch.bfloat16)
    for activation, fused in ((torch.nn.GELU(), True), (torch.nn.GELU(approximate="tanh"), False)):
        block = FeedForward(activation).to(torch.bfloat16).eval()
        with torch.inference_mode():
            expected = block(hidden).float()
            assert pack_linear_layers(block) == 2
            got = block(hidden).float()
        assert type(block.dense).__name__ == "PackedLinear" and type(block.out).__name__ == "PackedLinear"
        assert isinstance(block.intermediate_act_fn, torch.nn.Identity) == fused  # only the exact GELU is fused
        assert got.shape == expected.shape
        assert torch.allclose(got, expected, atol=0.05, rtol=0.02)


@pytest.mark.integration
@needs_native_bf16
def test_the_packed_model_gives_the_plain_bf16_vectors_in_their_places(minilm: ModelRef) -> None:
    """Over several length-sorted batches of 1 to ~120 tokens, every row against plain bf16 sentence-transformers
    (cos ≥ 0.999); no plain linear layer is left in the model the embedder encodes with."""
    import torch
    from sentence_transformers import SentenceTransformer

    embedder = Embedder(minilm, precision="bf16", backend="torch", batch_size=16)
    assert embedder.vector_kind == "bf16/torch-packed"
    vectors = embedder.encode(TEXTS)
    plain = SentenceTransformer(str(minilm.path), device="cpu").to(torch.bfloat16)
    reference = plain.encode(TEXTS, batch_size=16, convert_to_tensor=True).float().numpy()
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)  # in float32: a bf16 norm is off by up to 0.3 %
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert (vectors * reference).sum(axis=1).min() >= 0.999
    from ragtune.models import load_sentence_transformer

    model = load_sentence_transformer(minilm.path, "bf16", "cpu")
    assert not [m for m in model.modules() if type(m) is torch.nn.Linear]
    assert sum(type(m).__name__ == "PackedLinear" for m in model.modules()) >= 6 * 6


@pytest.mark.integration
@needs_native_bf16
def test_turning_packing_off_in_a_running_process_loads_plain_layers(
    minilm: ModelRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loaded model and the vector kind the cache files its vectors under never disagree."""
    import torch

    from ragtune.models import load_sentence_transformer

    packed = load_sentence_transformer(minilm.path, "bf16", "cpu")
    monkeypatch.setenv(PACK_ENV, "0")
    plain = load_sentence_transformer(minilm.path, "bf16", "cpu")
    assert plain is not packed and Embedder(minilm, precision="bf16", backend="torch").vector_kind == "bf16/torch"
    assert not [m for m in plain.modules() if type(m).__name__ == "PackedLinear"]
    assert [m for m in plain.modules() if type(m) is torch.nn.Linear]


@pytest.mark.parametrize("value", ["2", "maybe", "of"])
def test_an_unknown_packing_switch_is_refused_naming_the_variable(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A typo must not silently pick a side: it is refused even where packing would not apply (fp32)."""
    monkeypatch.setenv(PACK_ENV, value)
    for precision in ("bf16", "fp32"):
        with pytest.raises(RagtuneError, match=rf"\$RAGTUNE_PACK_WEIGHTS='{value}' is neither on .* nor off"):
            packs_linear_weights(precision, "cpu")


@pytest.mark.parametrize("value", ["0", "off", "No", " false "])
def test_every_off_spelling_keeps_plain_layers(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PACK_ENV, value)
    assert packs_linear_weights("bf16", "cpu") is False


@needs_native_bf16
@pytest.mark.parametrize("value", ["1", "ON", "yes", "true"])
def test_every_on_spelling_packs_where_bf16_is_native(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PACK_ENV, value)
    assert packs_linear_weights("bf16", "cpu") is True

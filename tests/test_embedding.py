"""Encoding precision: bf16 (the default where the CPU supports it) stays close to fp32 and is unit-length."""

from __future__ import annotations

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

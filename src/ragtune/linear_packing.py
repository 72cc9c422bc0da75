"""Linear layers whose bf16 weights oneDNN has reordered once for this CPU, for encoding on the CPU.

`torch.nn.Linear` in bf16 hands oneDNN a plain weight matrix on every call, not the blocked layout its AMX /
AVX512-BF16 kernels read best. `pack_linear_layers` reorders each weight into that layout once, when the model is loaded
for inference (`torch.ops.mkldnn._reorder_linear_weight`), and runs each layer through oneDNN's linear on the packed
weight (`torch.ops.mkldnn._linear_pointwise`), with a BERT feed-forward's exact GELU fused into its first linear:
the same calls inductor emits for a frozen `torch.compile` graph, without its 17–19 s of compiling in every process.
SciFact's documents on 2 threads of the AMX Xeon: 1.32× the unpacked bf16 model (median of 3 rounds in turns,
bench/bench_encode.py), nDCG@10 within 0.0005 of it, cosine ≥ 0.99997 on a probe (BENCHMARKS.md).

Packed layers only run forward (no autograd): a model is packed only where it is loaded to encode, never to train.
`$RAGTUNE_PACK_WEIGHTS=0` (or off, no, false) keeps the plain layers; 1, on, yes or true (the default) packs them.
"""

from __future__ import annotations

import os
from functools import cache
from typing import TYPE_CHECKING

from ragtune.errors import RagtuneError

if TYPE_CHECKING:
    import torch

PACK_ENV = "RAGTUNE_PACK_WEIGHTS"
_OFF = ("0", "off", "no", "false")
_ON = ("1", "on", "yes", "true")
_ROWS_HINT = 64 * 256
"""Rows (tokens) oneDNN is told to expect when it picks the packed layout: 64 full-length passages (the CPU batch until
12-05; at today's batch of 32, hints of 8,192 and 16,384 rows encoded SciFact alike, a probe of 12-05). The
layout serves any row count (a 384×384 layer on 20 rows, a query's tokens, ran 1.4× faster packed than plain with
this hint or with a hint of 64; a probe of 12-05)."""


def packs_linear_weights(precision: str, device: str) -> bool:
    """Whether a model loaded to encode at `precision` on `device` gets packed linear layers: bf16 on a CPU where
    oneDNN multiplies bf16 natively, unless $RAGTUNE_PACK_WEIGHTS is 0. A value that neither `_ON` nor `_OFF`
    names is refused, whatever the precision, so a typo never silently picks a side."""
    setting = os.environ.get(PACK_ENV, "1").strip().lower()
    if setting not in _ON + _OFF:
        raise RagtuneError(f"${PACK_ENV}='{os.environ[PACK_ENV]}' is neither on ({', '.join(_ON)}) nor off "
                           f"({', '.join(_OFF)}); set one of those or unset it (packed by default)")  # fmt: skip
    if precision != "bf16" or device != "cpu" or setting in _OFF:
        return False
    import torch

    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


@cache
def _packed_linear_class() -> type[torch.nn.Module]:
    """Made on first use, so that importing ragtune does not import torch."""
    import torch

    class PackedLinear(torch.nn.Module):
        """`linear` (followed by `activation`: "none" or "gelu") on a weight oneDNN reordered once."""

        def __init__(self, linear: torch.nn.Linear, activation: str = "none") -> None:
            super().__init__()
            self.in_features, self.out_features = linear.in_features, linear.out_features
            self.activation = activation
            self.register_buffer("packed_weight", torch.ops.mkldnn._reorder_linear_weight(
                linear.weight.detach(), _ROWS_HINT), persistent=False)  # fmt: skip
            self.bias = None if linear.bias is None else linear.bias.detach()
            self.algorithm = "none" if activation == "gelu" else ""  # exact (erf) GELU, as BERT's GELUActivation

        def forward(self, hidden: torch.Tensor) -> torch.Tensor:
            rows = hidden.reshape(-1, self.in_features)
            out = torch.ops.mkldnn._linear_pointwise(rows, self.packed_weight, self.bias, self.activation, [],
                                                     self.algorithm)  # fmt: skip
            return out.view(*hidden.shape[:-1], self.out_features)

    return PackedLinear


def _is_exact_gelu(module: object) -> bool:
    import torch

    if isinstance(module, torch.nn.GELU):
        return module.approximate == "none"
    return getattr(module, "act", None) is torch.nn.functional.gelu  # transformers' GELUActivation


def prepare_for_inference(model: torch.nn.Module, precision: str, packed: bool) -> None:
    """Cast `model` (loaded to encode or score, never to train) to `precision` and, where `packed`
    (`packs_linear_weights`), pack its linear layers."""
    import torch

    if precision == "bf16":
        model.to(torch.bfloat16)
    if packed:
        pack_linear_layers(model)


def pack_linear_layers(model: torch.nn.Module) -> int:
    """Replace every bf16 `nn.Linear` inside `model` by its packed form, in place; a feed-forward block that is
    `dense` then an exact GELU (`intermediate_act_fn`, as BERT's) runs both in one oneDNN call. Returns how many
    layers were packed. Call it only where `packs_linear_weights` says so."""
    import torch

    packed_linear = _packed_linear_class()
    count = 0
    for module in list(model.modules()):
        activation = getattr(module, "intermediate_act_fn", None)
        dense = getattr(module, "dense", None)
        if type(dense) is torch.nn.Linear and dense.weight.dtype == torch.bfloat16 and _is_exact_gelu(activation):
            module.dense = packed_linear(dense, "gelu")
            module.intermediate_act_fn = torch.nn.Identity()
            count += 1
        for name, child in list(module.named_children()):
            if type(child) is torch.nn.Linear and child.weight.dtype == torch.bfloat16:
                setattr(module, name, packed_linear(child))
                count += 1
    return count

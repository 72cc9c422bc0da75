"""How a store is searched by default: mode, fusion and its parameters, as chosen on dev queries and recorded in the
store's manifest (`ragtune search`, `ask` and `serve` use them unless told otherwise)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from ragtune.errors import StoreError

DEFAULT_RRF_K = 60


class SearchMode(str, Enum):
    dense = "dense"
    bm25 = "bm25"
    hybrid = "hybrid"


class Fusion(str, Enum):
    rrf = "rrf"
    convex = "convex"


@dataclass(frozen=True)
class SearchSettings:
    """`alpha` is the dense weight of the convex combination (BM25 gets 1 − alpha); `rrf_k` the RRF constant."""

    mode: SearchMode = SearchMode.hybrid
    fusion: Fusion = Fusion.rrf
    alpha: float = 0.5
    rrf_k: int = DEFAULT_RRF_K

    @property
    def fusion_label(self) -> str:
        if self.fusion is Fusion.rrf:
            return "rrf" if self.rrf_k == DEFAULT_RRF_K else f"rrf k={self.rrf_k}"
        return f"convex {self.alpha:.2f}"

    @property
    def label(self) -> str:
        return f"hybrid {self.fusion_label}" if self.mode is SearchMode.hybrid else self.mode.value

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode.value, "fusion": self.fusion.value, "alpha": self.alpha, "rrf_k": self.rrf_k}

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str) -> SearchSettings:
        """Settings recorded in a manifest; an empty record means the defaults. A bad record is a StoreError."""
        try:
            settings = cls(
                mode=SearchMode(data.get("mode", SearchMode.hybrid.value)),
                fusion=Fusion(data.get("fusion", Fusion.rrf.value)),
                alpha=float(data.get("alpha", 0.5)),
                rrf_k=int(data.get("rrf_k", DEFAULT_RRF_K)),
            )
        except (ValueError, TypeError) as exc:
            raise StoreError(f"{where}: the recorded search settings {data!r} are not valid ({exc})") from exc
        if not 0.0 <= settings.alpha <= 1.0 or settings.rrf_k < 0:
            raise StoreError(f"{where}: the recorded search settings {data!r} are out of range")
        return settings

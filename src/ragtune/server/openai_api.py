"""The OpenAI-compatible embeddings API over the store's model (base or tuned): `POST /v1/embeddings` and
`GET /v1/models`, so any client of that API (the `openai` package, LangChain's and LlamaIndex's OpenAI embedding
classes, vector databases' embedding hooks) uses the model without code from us.

Texts go through the same encoder as searches (shared batches with concurrent queries). The key is the server's
(`X-API-Key`, or `Authorization: Bearer` as OpenAI clients send it). Errors use OpenAI's error shape.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from ragtune.store import StoreReader

MAX_INPUTS = 256
MAX_INPUT_CHARS = 32_000


class EmbeddingsRequest(BaseModel):
    input: str | list[str] = Field(description="A text or a list of texts (token-id inputs are not supported).")
    model: str = Field(description="The name `GET /v1/models` lists (the store's model).")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, description="Must equal the model's dimension if given.")
    user: str | None = None


def _error(status: int, message: str, kind: str, code: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": code}}, status_code=status)


def model_name(store: StoreReader) -> str:
    return str(store.manifest.model["name"])


def embeddings_router(current_store: Callable[[], StoreReader], guards: list[Any]) -> APIRouter:
    """`current_store()` gives the store to serve (the holder's); `guards` are the key and readiness checks."""
    router = APIRouter(prefix="/v1", dependencies=[Depends(g) for g in guards])

    @router.get("/models")
    def models() -> dict[str, Any]:
        store = current_store()
        return {"object": "list", "data": [{"id": model_name(store), "object": "model", "created": int(time.time()),
                                            "owned_by": "ragtune"}]}  # fmt: skip

    @router.post("/embeddings", response_model=None)
    def embeddings(request: EmbeddingsRequest) -> dict[str, Any] | JSONResponse:
        store = current_store()
        name = model_name(store)
        if request.model != name:
            return _error(404, f"the model '{request.model}' does not exist here; this server embeds with '{name}'",
                          "invalid_request_error", "model_not_found")  # fmt: skip
        texts = [request.input] if isinstance(request.input, str) else request.input
        if not texts or len(texts) > MAX_INPUTS:
            return _error(400, f"give 1 to {MAX_INPUTS} input texts", "invalid_request_error")
        if any(not text.strip() or len(text) > MAX_INPUT_CHARS for text in texts):
            return _error(400, f"each input must be a non-empty text of at most {MAX_INPUT_CHARS} characters",
                          "invalid_request_error")  # fmt: skip
        vectors = store.embedder.encode(texts)
        if request.dimensions is not None and request.dimensions != vectors.shape[1]:
            return _error(400, f"this model's vectors have {vectors.shape[1]} dimensions, not {request.dimensions}",
                          "invalid_request_error")  # fmt: skip
        data = [{"object": "embedding", "index": i, "embedding": _encoded(v, request.encoding_format)}
                for i, v in enumerate(vectors)]  # fmt: skip
        tokens = store.embedder.count_tokens(texts)
        return {"object": "list", "data": data, "model": name,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}  # fmt: skip

    return router


def _encoded(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":  # little-endian float32, as OpenAI's clients decode it
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return [float(x) for x in vector]

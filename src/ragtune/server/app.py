"""The FastAPI app: search and store info over HTTP, and a web page to try it.

Loopback by default; optional API key from an environment variable; bounded request size and `k`; no endpoint reads
a path from the request. The store is opened read-only; a newer generation written by `ragtune index` is picked up
between requests (never half-way through one).
"""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field, field_validator
from starlette.middleware.base import BaseHTTPMiddleware

from ragtune.errors import RagtuneError
from ragtune.retrieval import Retriever, SearchMode
from ragtune.store import Store
from ragtune.store.manifest import manifest_path

MAX_BODY_BYTES = 64 * 1024
MAX_K = 100
API_KEY_HEADER = "X-API-Key"


class SearchRequest(BaseModel):
    query: str = Field(min_length=1, max_length=2000, description="What to search for.")
    k: int = Field(10, ge=1, le=MAX_K, description="Number of hits.")
    mode: SearchMode = Field(SearchMode.hybrid, description="dense, bm25 or hybrid.")
    filters: dict[str, str] = Field(default_factory=dict, description="source=PREFIX, or a field's exact value.")

    @field_validator("query")
    @classmethod
    def not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the query is empty or only whitespace")
        return value


class StoreHolder:
    """Owns the opened store; swaps in a new generation when the manifest changes, between requests."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._search_lock = threading.Lock()
        self._store: Store | None = None
        self._manifest_stamp: tuple[int, int] = (0, 0)
        self.ready = False

    def load(self) -> None:
        store = self.current()
        store.embedder.encode_query("warm-up")  # load the model before reporting ready
        self.ready = True

    def current(self) -> Store:
        with self._lock:
            stat = manifest_path(self.directory).stat()
            stamp = (stat.st_ino, stat.st_mtime_ns)  # the manifest is replaced by rename: a new inode
            if self._store is None or stamp != self._manifest_stamp:
                fresh = Store.open(self.directory)
                if self._store is not None:
                    fresh._embedder = self._store._embedder if _same_model(fresh, self._store) else None
                self._store, self._manifest_stamp = fresh, stamp
            return self._store

    def search(self, request: SearchRequest) -> list[dict[str, Any]]:
        store = self.current()
        with self._search_lock:  # one search at a time: 2 cores, torch and SQLite are happier serialised
            hits = Retriever(store).search(request.query, k=request.k, mode=request.mode, filters=list(request.filters.items()))
        return [hit.to_json() for hit in hits]


def _same_model(a: Store, b: Store) -> bool:
    return a.manifest.model["revision"] == b.manifest.model["revision"]


class BodySizeLimit(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next):  # type: ignore[no-untyped-def]
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
            return JSONResponse({"detail": f"request body over {MAX_BODY_BYTES} bytes"}, status_code=413)
        return await call_next(request)


def create_app(store_dir: str | Path, api_key_env: str | None = None) -> FastAPI:
    holder = StoreHolder(Path(store_dir).expanduser())
    holder.current()  # fail fast on a missing or corrupt store

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        threading.Thread(target=holder.load, daemon=True).start()
        yield

    app = FastAPI(title="ragtune", version="0.1.0", lifespan=lifespan, description="Search a ragtune store.")
    app.add_middleware(BodySizeLimit)
    app.state.holder = holder

    @app.exception_handler(RagtuneError)
    async def user_error(request: Request, exc: RagtuneError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    def check_key(request: Request) -> None:
        if not api_key_env:
            return
        expected = os.environ.get(api_key_env)
        if not expected:
            raise HTTPException(500, f"API key variable {api_key_env} is not set on the server")
        if request.headers.get(API_KEY_HEADER) != expected:
            raise HTTPException(401, f"missing or wrong {API_KEY_HEADER} header")

    authorised = [Depends(check_key)]

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return resources.files("ragtune.server").joinpath("index.html").read_text(encoding="utf-8")

    @app.get("/health")
    def health() -> JSONResponse:
        status = {"ready": holder.ready}
        return JSONResponse(status, status_code=200 if holder.ready else 503)

    @app.get("/info", dependencies=authorised)
    def info() -> dict[str, Any]:
        from ragtune.evaluation.report import versions

        return holder.current().info() | {"versions": versions(), "api_key_required": bool(api_key_env)}

    @app.post("/search", dependencies=authorised)
    def search(request: SearchRequest) -> list[dict[str, Any]]:
        if not holder.ready:
            raise HTTPException(503, "models are still loading; retry when /health says ready")
        return holder.search(request)

    return app

"""The FastAPI app: search, grounded answers (plain and streamed as server-sent events), store info, and a web page.

Loopback by default; optional API key from an environment variable; bounded request size and `k`; no endpoint reads
a path from the request. The store is opened read-only; a newer generation written by `ragtune index` is picked up
between requests (never half-way through one).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, Field, field_validator
from starlette.middleware.base import BaseHTTPMiddleware

from ragtune.errors import RagtuneError
from ragtune.generation import Answerer, Generator, default_answer_mode, load_generator
from ragtune.retrieval import Reranker, Retriever, SearchMode
from ragtune.store import StoreReader, is_postgres_address, open_store

MAX_BODY_BYTES = 64 * 1024
MAX_K = 100
API_KEY_HEADER = "X-API-Key"


def _not_blank(value: str, name: str) -> str:
    if not value.strip():
        raise ValueError(f"the {name} is empty or only whitespace")
    return value


class SearchRequest(BaseModel):
    query: str = Field(min_length=1, max_length=2000, description="What to search for.")
    k: int = Field(10, ge=1, le=MAX_K, description="Number of hits.")
    mode: SearchMode | None = Field(None, description="dense, bm25 or hybrid; default: the store's recorded setting.")
    filters: dict[str, str] = Field(default_factory=dict, description="source=PREFIX, or a field's exact value.")

    _not_blank = field_validator("query")(lambda cls, value: _not_blank(value, "query"))


class AskRequest(BaseModel):
    question: str = Field(min_length=1, max_length=2000, description="The question to answer from the store.")
    k: int = Field(5, ge=1, le=20, description="Passages retrieved and packed into the prompt.")
    mode: SearchMode | None = Field(None, description="dense, bm25 or hybrid; default: the store's recorded setting.")
    answer: Literal["extractive", "generate"] | None = Field(
        None,
        description="extractive: the passages' best sentences, quoted and cited; generate: the generator writes the "
        "answer. Default: extractive with the bundled small generator, else generate.",
    )

    _not_blank = field_validator("question")(lambda cls, value: _not_blank(value, "question"))


class StoreHolder:
    """Owns the opened store and models; swaps in a new generation when the manifest changes, between requests.

    `generator_spec` None disables /ask. Retrieval and generation are serialised separately, so a long answer
    does not hold up searches.
    """

    def __init__(
        self, directory: str | Path, generator_spec: str | None = None, reranker: Path | None = None,
        rerank_depth: int = 20, rerank_weight: float = 1.0,
    ) -> None:  # fmt: skip
        self.directory = directory
        self.generator_spec = generator_spec
        self.reranker_path = reranker
        self.rerank_depth = rerank_depth
        self.rerank_weight = rerank_weight
        self._lock = threading.Lock()
        self._generate_lock = threading.Lock()
        self._store: StoreReader | None = None
        self.reranker: Reranker | None = None
        self.generator: Generator | None = None
        self.ready = False
        self.load_error: str | None = None

    def load(self) -> None:
        try:
            store = self.current()
            store.embedder.encode_query("warm-up")  # load the model before reporting ready
            if self.reranker_path is not None:
                self.reranker = Reranker(self.reranker_path, weight=self.rerank_weight)
            if self.generator_spec is not None:
                self.generator = load_generator(self.generator_spec)
        except RagtuneError as exc:
            self.load_error = str(exc)
            return
        self.ready = True

    def current(self) -> StoreReader:
        with self._lock:
            if self._store is None or self._store.changed_since_open():
                fresh = open_store(self.directory)
                old = self._store
                if old is not None:
                    if _same_model(fresh, old):
                        fresh.use_embedder(old.embedder)
                    _close_later(old)
                self._store = fresh
            return self._store

    def search(self, request: SearchRequest) -> list[dict[str, Any]]:
        store = self.current()
        # searches run side by side: each engine's readers are thread-safe (the OpenVINO encoder keeps an infer
        # request per thread); serialising them cost the PostgreSQL engine 40 % of its throughput (BENCHMARKS.md)
        hits = self.retriever(store).search(
            request.query, k=request.k, mode=request.mode, filters=list(request.filters.items())
        )
        return [hit.to_json() for hit in hits]

    def retriever(self, store: StoreReader) -> Retriever:
        return Retriever(store, reranker=self.reranker, rerank_depth=self.rerank_depth)

    def answer_events(self, request: AskRequest) -> Iterator[tuple[str, Any]]:
        """(event, data) pairs: `passages` once, `token` per piece of text, then `answer` (or `error`)."""
        if self.generator is None:
            raise HTTPException(503, "this server has no generator; start it with --generator to enable /ask")
        store = self.current()
        answer_mode = request.answer or default_answer_mode(self.generator_spec)
        answerer = Answerer(self.retriever(store), self.generator, k=request.k, mode=request.mode, answer=answer_mode)
        stream = answerer.stream(request.question)
        yield "passages", [dict(p.hit.to_json(), number=p.number) for p in stream.passages]
        with self._generate_lock:
            try:
                for piece in stream:
                    yield "token", piece
            except RagtuneError as exc:
                yield "error", {"detail": str(exc)}
                return
        assert stream.answer is not None
        yield "answer", stream.answer.to_json()


RETIRED_STORE_GRACE_SECONDS = 60.0
"""A store replaced by a newer one is closed this long after (its connections freed), once requests that began
with it have finished."""


def _close_later(store: StoreReader) -> None:
    timer = threading.Timer(RETIRED_STORE_GRACE_SECONDS, store.close)
    timer.daemon = True
    timer.start()


def _same_model(a: StoreReader, b: StoreReader) -> bool:
    return a.manifest.model["revision"] == b.manifest.model["revision"]


class BodySizeLimit(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next):  # type: ignore[no-untyped-def]
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
            return JSONResponse({"detail": f"request body over {MAX_BODY_BYTES} bytes"}, status_code=413)
        return await call_next(request)


def _sse(events: Iterator[tuple[str, Any]]) -> Iterator[str]:
    for event, data in events:
        yield f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def create_app(
    store_dir: str | Path,
    api_key_env: str | None = None,
    generator: str | None = None,
    reranker: str | Path | None = None,
    rerank_depth: int = 20,
    rerank_weight: float = 1.0,
) -> FastAPI:
    """`generator`: a `--generator` spec (loaded at start-up, /ask disabled when None); `reranker`: a directory,
    re-scoring the top `rerank_depth` with the cross-encoder's share `rerank_weight` (see `Reranker`)."""
    holder = StoreHolder(
        store_dir if is_postgres_address(store_dir) else Path(store_dir).expanduser(), generator, Path(reranker) if reranker else None, rerank_depth, rerank_weight
    )
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
        status: dict[str, Any] = {"ready": holder.ready, "ask": holder.generator_spec is not None}
        if holder.load_error:
            status["error"] = holder.load_error
        return JSONResponse(status, status_code=200 if holder.ready else 503)

    @app.get("/info", dependencies=authorised)
    def info() -> dict[str, Any]:
        from ragtune.evaluation.report import versions

        generator_name = holder.generator.name if holder.generator else None
        return holder.current().info() | {
            "versions": versions(),
            "api_key_required": bool(api_key_env),
            "generator": generator_name,
            "reranker": str(holder.reranker_path) if holder.reranker_path else None,
        }

    def check_ready() -> None:
        if not holder.ready:
            raise HTTPException(503, holder.load_error or "models are still loading; retry when /health says ready")

    @app.post("/search", dependencies=authorised)
    def search(request: SearchRequest) -> list[dict[str, Any]]:
        check_ready()
        return holder.search(request)

    @app.post("/ask", dependencies=authorised)
    def ask(request: AskRequest) -> dict[str, Any]:
        """Answer with citations (the whole answer at once)."""
        check_ready()
        final: dict[str, Any] = {}
        for event, data in holder.answer_events(request):
            if event == "error":
                raise HTTPException(502, data["detail"])
            if event == "answer":
                final = data
        return final

    @app.post("/ask/stream", dependencies=authorised)
    def ask_stream(request: AskRequest) -> StreamingResponse:
        """The same answer as server-sent events: `passages`, then `token`s, then `answer` (or `error`)."""
        check_ready()
        events = holder.answer_events(request)
        first = next(events)  # a missing generator or a bad store fails here, as a plain HTTP error
        return StreamingResponse(
            _sse(_chain(first, events)),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return app


def _chain(first: tuple[str, Any], rest: Iterator[tuple[str, Any]]) -> Iterator[tuple[str, Any]]:
    yield first
    yield from rest

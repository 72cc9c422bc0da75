"""The FastAPI app: search, grounded answers (plain and streamed as server-sent events), store info, and a web page.

Loopback by default; optional API key from an environment variable (compared in constant time); bounded request
size (on the bytes read), `k` and answers in flight; no endpoint reads a path from the request. The store is opened
read-only; a newer generation written by `ragtune index` is picked up between requests (never half-way through one).
Concurrent searches share query-encoding batches (`QueryBatcher`); /metrics speaks Prometheus.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import threading
import weakref
from collections.abc import AsyncIterator, Callable
from collections.abc import Generator as PyGenerator
from contextlib import asynccontextmanager, closing, nullcontext
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Request, Response, Security
from fastapi.concurrency import iterate_in_threadpool, run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field, field_validator

from ragtune.errors import InputError, RagtuneError
from ragtune.generation import Answerer, Generator, default_answer_mode, default_prompting, load_generator
from ragtune.query_batching import DEFAULT_MAX_BATCH, DEFAULT_MAX_SEARCHES, DEFAULT_WINDOW_SECONDS, QueryBatcher
from ragtune.retrieval import Reranker, Retriever, SearchMode
from ragtune.server.edges import AccessLog, BodySizeLimit
from ragtune.server.metrics import CONTENT_TYPE, ServerMetrics
from ragtune.server.openai_api import embeddings_router
from ragtune.store import StoreReader, is_postgres_address, open_store, query_embedder

MAX_BODY_BYTES = 64 * 1024
MAX_K = 100
API_KEY_HEADER = "X-API-Key"
ASK_RETRY_AFTER_SECONDS = 5
Events = PyGenerator[tuple[str, Any], None, None]
"""An answer as (event, data) pairs (`StoreHolder.answer_events`)."""
SETTINGS_ENVIRONMENT = "RAGTUNE_SERVE_SETTINGS"
"""How `ragtune serve --workers N` hands its settings to each worker process (`app_from_environment`)."""


@dataclass(frozen=True)
class ServeSettings:
    """Everything `create_app` needs; plain data, so worker processes can rebuild the app from it."""

    store: str
    api_key_env: str | None = None
    generator: str | None = None
    """A `--generator` spec (loaded at start-up); None disables /ask."""
    reranker: str | None = None
    rerank_depth: int = 20
    rerank_weight: float = 1.0
    batch_window_ms: float = 1000 * DEFAULT_WINDOW_SECONDS
    """How long the query encoder waits for more concurrent queries before a batch (0: only what already waits)."""
    max_batch: int = DEFAULT_MAX_BATCH
    max_asks: int = 4
    """/ask and /ask/stream requests answered at once; more get 503 with Retry-After instead of a queue."""
    max_searches: int = DEFAULT_MAX_SEARCHES
    """/search requests worked on at once (0: no limit); the rest wait their turn, first come first served."""
    query_precision: str | None = None
    """int8, bf16 or fp32 for encoding queries; None: $RAGTUNE_QUERY_PRECISION, else as the documents."""

    def __post_init__(self) -> None:
        if self.batch_window_ms < 0 or self.max_batch < 1 or self.max_asks < 1 or self.max_searches < 0:
            raise InputError("--batch-window-ms and --max-searches must be ≥ 0, --max-batch and --max-asks ≥ 1")

    def to_environment(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_environment(cls) -> ServeSettings:
        raw = os.environ.get(SETTINGS_ENVIRONMENT)
        if not raw:
            raise RagtuneError(f"{SETTINGS_ENVIRONMENT} is not set: start workers with `ragtune serve --workers N`")
        return cls(**json.loads(raw))


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
    answer: Literal["extractive", "generate", "both"] | None = Field(
        None,
        description="extractive: the passages' best sentences, quoted and cited; generate: the generator writes the "
        "answer, each sentence checked against the passages it cites (`sentences`); both: that plus the evidence "
        "answer (`evidence`). Default: extractive with the bundled small generator, else generate.",
    )
    prompting: Literal["together", "per-passage"] | None = Field(
        None,
        description="together: all passages in one prompt, the generator cites them; per-passage: one sentence "
        "written from each of the top 3 passages alone, cited by construction. Default: per-passage with the bundled "
        "small generator, else together.",
    )

    _not_blank = field_validator("question")(lambda cls, value: _not_blank(value, "question"))


class StoreHolder:
    """Owns the opened store and models; swaps in a new generation when the manifest changes, between requests.

    `generator_spec` None disables /ask. Retrieval and generation are serialised separately, so a long answer
    does not hold up searches.
    """

    def __init__(self, settings: ServeSettings, metrics: ServerMetrics) -> None:
        store = settings.store
        self.directory = store if is_postgres_address(store) else Path(store).expanduser()
        self.settings = settings
        self.metrics = metrics
        self.generator_spec = settings.generator
        self.reranker_path = Path(settings.reranker) if settings.reranker else None
        self.rerank_depth = settings.rerank_depth
        self.rerank_weight = settings.rerank_weight
        self._lock = threading.Lock()
        self._generate_lock = threading.Lock()
        self._ask_slots = threading.BoundedSemaphore(settings.max_asks)
        self._store: StoreReader | None = None
        self.reranker: Reranker | None = None
        self.generator: Generator | None = None
        self.ready = False
        self.load_error: str | None = None
        self.query_encoding: str | None = None
        """How queries are encoded (`int8/openvino`, `bf16/openvino`), once loaded."""

    def load(self) -> None:
        try:
            store = self.current()
            embedder = query_embedder(store.manifest, store.passage_texts, self.settings.query_precision)
            embedder.encode_query("warm-up")  # load the model before reporting ready
            self.query_encoding = embedder.vector_kind
            store.use_embedder(QueryBatcher(embedder, self.settings.batch_window_ms / 1000, self.settings.max_batch,
                                            self.metrics.batch_size.observe))  # fmt: skip
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

    def ask_slot(self) -> None:
        """Take one of the `max_asks` answer slots, or refuse with 503 + Retry-After; `release_ask_slot` after."""
        if self.generator is None:
            raise HTTPException(503, "this server has no generator; start it with --generator to enable /ask")
        if not self._ask_slots.acquire(blocking=False):
            self.metrics.asks_rejected.inc()
            raise HTTPException(503, f"{self.settings.max_asks} answers are being written; retry shortly",
                                headers={"Retry-After": str(ASK_RETRY_AFTER_SECONDS)})  # fmt: skip

    def release_ask_slot(self) -> None:
        self._ask_slots.release()

    def answer_events(self, request: AskRequest) -> Events:
        """(event, data) pairs: `passages` once, `token` per piece of text, then `answer` (or `error`). The caller
        holds an answer slot (`ask_slot`)."""
        store = self.current()
        answer_mode = request.answer or default_answer_mode(self.generator_spec)
        answerer = Answerer(self.retriever(store), self.generator, k=request.k, mode=request.mode, answer=answer_mode,
                            prompting=request.prompting or default_prompting(self.generator_spec))  # fmt: skip
        stream = answerer.stream(request.question)
        yield "passages", [dict(p.hit.to_json(), number=p.number) for p in stream.passages]
        with self._generate_lock, closing(stream):  # closed early (the client left): generation stops there
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


def create_app(
    store_dir: str | Path,
    api_key_env: str | None = None,
    generator: str | None = None,
    reranker: str | Path | None = None,
    rerank_depth: int = 20,
    rerank_weight: float = 1.0,
    **settings: Any,
) -> FastAPI:
    """`generator`: a `--generator` spec (loaded at start-up, /ask disabled when None); `reranker`: a directory,
    re-scoring the top `rerank_depth` with the cross-encoder's share `rerank_weight` (see `Reranker`); the other
    `ServeSettings` fields as keywords."""
    return app_from_settings(ServeSettings(
        str(store_dir), api_key_env, generator, str(reranker) if reranker else None, rerank_depth, rerank_weight,
        **settings,
    ))  # fmt: skip


def app_from_environment() -> FastAPI:
    """The app of one `ragtune serve --workers N` worker process (uvicorn's factory)."""
    return app_from_settings(ServeSettings.from_environment())


def app_from_settings(settings: ServeSettings) -> FastAPI:
    metrics = ServerMetrics()
    holder = StoreHolder(settings, metrics)
    holder.current()  # fail fast on a missing or corrupt store
    api_key_env = settings.api_key_env

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        threading.Thread(target=holder.load, daemon=True).start()
        yield

    app = FastAPI(title="ragtune", version="0.1.0", lifespan=lifespan, description="Search a ragtune store.")
    app.add_middleware(BodySizeLimit, limit=MAX_BODY_BYTES)
    app.add_middleware(AccessLog, metrics=metrics)
    app.state.holder = holder

    @app.exception_handler(RagtuneError)
    async def user_error(request: Request, exc: RagtuneError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    api_key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False)
    bearer = HTTPBearer(auto_error=False)  # OpenAI clients send the key as `Authorization: Bearer KEY`

    def check_key(
        key: str | None = Security(api_key_header), token: HTTPAuthorizationCredentials | None = Security(bearer)
    ) -> None:
        if not api_key_env:
            return
        given = key if key is not None else (token.credentials if token is not None else None)
        expected = os.environ.get(api_key_env)
        if not expected:
            raise HTTPException(500, f"API key variable {api_key_env} is not set on the server")
        if given is None or not secrets.compare_digest(given.encode(), expected.encode()):
            raise HTTPException(401, f"missing or wrong {API_KEY_HEADER} header (or Authorization: Bearer)")

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

    @app.get("/metrics", dependencies=authorised, include_in_schema=False)
    def prometheus_metrics() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/info", dependencies=authorised)
    def info() -> dict[str, Any]:
        from ragtune.evaluation.report import versions

        generator_name = holder.generator.name if holder.generator else None
        return holder.current().info() | {
            "versions": versions(),
            "api_key_required": bool(api_key_env),
            "generator": generator_name,
            "reranker": str(holder.reranker_path) if holder.reranker_path else None,
            "query_encoding": holder.query_encoding,
        }

    def check_ready() -> None:
        if not holder.ready:
            raise HTTPException(503, holder.load_error or "models are still loading; retry when /health says ready")

    app.include_router(embeddings_router(holder.current, [check_key, check_ready]))

    searching = asyncio.Semaphore(settings.max_searches) if settings.max_searches else nullcontext()

    @app.post("/search", dependencies=authorised)
    async def search(request: SearchRequest) -> list[dict[str, Any]]:
        check_ready()
        async with searching:  # waiters are let in in arrival order
            return await run_in_threadpool(holder.search, request)

    @app.post("/ask", dependencies=authorised)
    def ask(request: AskRequest) -> dict[str, Any]:
        """Answer with citations (the whole answer at once)."""
        check_ready()
        holder.ask_slot()
        try:
            final: dict[str, Any] = {}
            for event, data in holder.answer_events(request):
                if event == "error":
                    raise HTTPException(502, data["detail"])
                if event == "answer":
                    final = data
            return final
        finally:
            holder.release_ask_slot()

    @app.post("/ask/stream", dependencies=authorised)
    async def ask_stream(request: AskRequest, http: Request) -> StreamingResponse:
        """The same answer as server-sent events: `passages`, then `token`s, then `answer` (or `error`)."""
        check_ready()
        holder.ask_slot()
        release = _once(holder.release_ask_slot)
        try:
            events = holder.answer_events(request)
            first = await run_in_threadpool(next, events)  # a bad store or request fails here, as an HTTP error
        except BaseException:
            release()
            raise
        body = _sse_until_disconnected(first, events, http, release)
        weakref.finalize(body, release)  # a stream never started (client gone before it) gives its slot back too
        return StreamingResponse(
            body, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )

    return app


def _once(action: Callable[[], None]) -> Callable[[], None]:
    done = threading.Event()
    guard = threading.Lock()

    def run() -> None:
        with guard:
            if done.is_set():
                return
            done.set()
        action()

    return run


async def _sse_until_disconnected(
    first: tuple[str, Any], events: Events, http: Request, release: Callable[[], None]
) -> AsyncIterator[str]:
    """Server-sent events until the answer ends or the client goes away; either way the generation is stopped (the
    event iterator closed) and the answer slot given back."""
    try:
        yield _sse_event(*first)
        async for event, data in iterate_in_threadpool(events):
            if await http.is_disconnected():
                return
            yield _sse_event(event, data)
    finally:
        try:
            events.close()  # stops generation where it stands (GeneratorExit inside the answer loop)
        except ValueError:  # still running in its thread: it ends with the next piece of text
            pass
        release()


def _sse_event(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"

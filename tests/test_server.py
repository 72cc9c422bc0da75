"""The HTTP API over a real uvicorn server on a loopback port, and the web page in headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from chat_server import ChatServer, running
from conftest import ENGINES, new_store, rel, write_docs
from ragtune.store import is_postgres_address

pytestmark = pytest.mark.integration
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Server:
    def __init__(self, app) -> None:  # type: ignore[no-untyped-def]
        import uvicorn

        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> _Server:
        self.thread.start()
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError("server did not become ready")

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


SERVED_DOCS: dict[str, Path] = {}
"""Store address → the document folder it was indexed from."""


@pytest.fixture(scope="module", params=ENGINES)
def store_dir(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> str:
    from ragtune.store import index_sources

    root = tmp_path_factory.mktemp("server")
    address = new_store(request.param, root, request)
    SERVED_DOCS[address] = write_docs(root / "docs")
    index_sources(address, [SERVED_DOCS[address]], show_progress=False)
    return address


ANSWER = "Cavitation damages the impeller [1] when inlet pressure drops [9]."


def engine_independent(store_dir: str) -> None:
    """HTTP edges that do not touch the engine run once, on the embedded store (the suite's time is bounded)."""
    if is_postgres_address(store_dir):
        pytest.skip("engine-independent: checked on the embedded store")


@pytest.fixture(scope="module")
def chat() -> Iterator[ChatServer]:
    with running(ChatServer(lambda body: ANSWER, delay=0.01)) as started:
        yield started


@pytest.fixture(scope="module")
def server(store_dir: str, chat: ChatServer) -> Iterator[_Server]:
    from ragtune.server import create_app

    with _Server(create_app(store_dir, generator=chat.url)) as started:
        yield started


def test_health_info_openapi(server: _Server) -> None:
    assert httpx.get(server.url + "/health").json() == {"ready": True, "ask": True}
    info = httpx.get(server.url + "/info").json()
    assert info["counts"]["passages"] == 4 and info["model"]["name"] == "minilm" and "torch" in info["versions"]
    spec = httpx.get(server.url + "/openapi.json").json()
    assert {"/search", "/ask", "/ask/stream", "/info", "/health"} <= set(spec["paths"])
    assert info["generator"].endswith("(test-model)")


def test_ask_answers_with_valid_citations_only(server: _Server) -> None:
    answer = httpx.post(server.url + "/ask", json={"question": "What damages the impeller?", "k": 2}).json()
    assert answer["answer"] == "Cavitation damages the impeller [1] when inlet pressure drops."
    assert answer["invalid_citations_removed"] == 1 and not answer["abstained"]
    assert answer["citations"][0]["passage_id"] == answer["hits"][0]["id"]
    assert rel(answer["hits"][0]["id"]) == "docs/guide/pumps.md#0"
    assert "Cavitation damages the impeller" in answer["citations"][0]["span_text"]
    assert [s["supported"] for s in answer["sentences"]] == [True] and answer["sentences"][0]["cited"] == [1]
    both = httpx.post(server.url + "/ask", json={"question": "What damages the impeller?", "k": 2, "answer": "both"})
    assert both.status_code == 200 and "Cavitation damages the impeller" in both.json()["evidence"]["answer"]


def test_ask_can_quote_evidence_instead_of_generating(server: _Server) -> None:
    payload = {"question": "What damages the impeller?", "k": 2, "answer": "extractive"}
    answer = httpx.post(server.url + "/ask", json=payload).json()
    assert "Cavitation damages the impeller when the inlet pressure drops too low. [1]" in answer["answer"]
    assert not answer["answer"].startswith("#")  # a heading is no evidence
    assert all(c["span_text"] in answer["answer"] for c in answer["citations"]) and "generation_s" not in answer["timings"]
    assert httpx.post(server.url + "/ask", json={**payload, "answer": "poem"}).status_code == 422


def test_ask_stream_sends_passages_tokens_then_the_answer(server: _Server) -> None:
    events: list[tuple[str, object]] = []
    with httpx.stream("POST", server.url + "/ask/stream", json={"question": "What damages the impeller?"}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        event = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                events.append((event or "", json.loads(line[6:])))
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "passages" and kinds[-1] == "answer" and kinds.count("token") > 3
    streamed = "".join(str(data) for kind, data in events if kind == "token")
    assert streamed.startswith("Cavitation damages the impeller [1]") and "[9]" not in streamed


@pytest.mark.parametrize("payload", [{"question": " "}, {"question": "pump", "k": 50}, {"k": 3}])
def test_ask_rejects_bad_requests(server: _Server, payload: dict) -> None:
    assert httpx.post(server.url + "/ask", json=payload).status_code == 422


def test_ask_without_a_generator_is_503(store_dir: str) -> None:
    from ragtune.server import create_app

    with _Server(create_app(store_dir)) as search_only:
        response = httpx.post(search_only.url + "/ask", json={"question": "pump"})
        assert response.status_code == 503 and "--generator" in response.json()["detail"]
        stream = httpx.post(search_only.url + "/ask/stream", json={"question": "pump"})
        assert stream.status_code == 503


def test_search_matches_cli_json(server: _Server, store_dir: str) -> None:
    from typer.testing import CliRunner

    from ragtune.cli import app

    body = {"query": "impeller cavitation", "k": 3, "mode": "hybrid"}
    api = httpx.post(server.url + "/search", json=body).json()
    cli = json.loads(
        CliRunner().invoke(app, ["search", "impeller cavitation", "--store", str(store_dir), "--k", "3", "--json"]).stdout
    )
    assert api == cli
    filtered = httpx.post(server.url + "/search", json={"query": "water", "filters": {"source": "docs/notes"}}).json()
    assert filtered and all(rel(hit["source"]).startswith("docs/notes/") for hit in filtered)


@pytest.mark.parametrize(
    "payload",
    [
        {"query": "   "}, {"query": "pump", "k": 0}, {"query": "pump", "k": 1000}, {"query": "pump", "mode": "magic"},
        {"k": 3}, {"query": "pump", "filters": "source=docs"},
    ],
)  # fmt: skip
def test_bad_requests_get_422(server: _Server, payload: dict) -> None:
    response = httpx.post(server.url + "/search", json=payload)
    assert response.status_code == 422
    assert response.json()["detail"]


def test_malformed_json_and_oversized_body(server: _Server) -> None:
    broken = httpx.post(server.url + "/search", content=b'{"query": ', headers={"Content-Type": "application/json"})
    assert broken.status_code == 422
    huge = httpx.post(server.url + "/search", json={"query": "pump " * 40_000})
    assert huge.status_code == 413


def test_concurrent_searches_and_reload_after_index(server: _Server, store_dir: str) -> None:
    from ragtune.store import index_sources

    errors: list[int] = []

    def client() -> None:
        for _ in range(10):
            response = httpx.post(server.url + "/search", json={"query": "pump seal", "k": 2}, timeout=30)
            if response.status_code != 200:
                errors.append(response.status_code)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    extra = SERVED_DOCS[store_dir] / "guide" / "compressor.md"
    extra.write_text("# Compressors\n\nScrew compressors deliver steady air flow.")
    index_sources(store_dir, [SERVED_DOCS[store_dir]], show_progress=False)
    for thread in threads:
        thread.join()
    assert errors == []
    hits = httpx.post(server.url + "/search", json={"query": "screw compressor", "k": 1, "mode": "bm25"}).json()
    assert rel(hits[0]["doc_id"]) == "docs/guide/compressor.md"


def test_search_without_a_mode_uses_the_stores_recorded_settings(server: _Server, store_dir: str) -> None:
    from ragtune.store import record_search_settings

    query = {"query": "water pump impeller", "k": 4}
    bm25 = httpx.post(server.url + "/search", json=query | {"mode": "bm25"}).json()
    assert [h["id"] for h in httpx.post(server.url + "/search", json=query).json()] != [h["id"] for h in bm25]
    try:
        record_search_settings(store_dir, {"mode": "bm25", "reason": "chosen on dev"})
        assert httpx.get(server.url + "/info").json()["search"]["mode"] == "bm25"  # the new manifest is picked up
        assert httpx.post(server.url + "/search", json=query).json() == bm25
        assert httpx.post(server.url + "/search", json=query | {"mode": None}).json() == bm25
    finally:
        record_search_settings(store_dir, {})


def test_api_key(store_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from ragtune.server import create_app

    monkeypatch.setenv("RAGTUNE_TEST_KEY", "s3cret")
    with _Server(create_app(store_dir, api_key_env="RAGTUNE_TEST_KEY")) as secured:
        assert httpx.post(secured.url + "/search", json={"query": "pump"}).status_code == 401
        assert httpx.get(secured.url + "/info").status_code == 401
        ok = httpx.post(secured.url + "/search", json={"query": "pump"}, headers={"X-API-Key": "s3cret"})
        assert ok.status_code == 200
        assert httpx.get(secured.url + "/health").status_code == 200


def test_page_in_headless_chromium(server: _Server, store_dir: str) -> None:
    engine_independent(store_dir)
    chromium = shutil.which("chromium")
    driver_path = shutil.which("chromedriver")
    assert chromium and driver_path, "Debian's chromium and chromium-driver are needed: run scripts/test.sh"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1100,900"):  # fmt: skip
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        browser.get(server.url + "/")
        WebDriverWait(browser, 30).until(expected_conditions.text_to_be_present_in_element((By.ID, "info"), "passages"))
        browser.find_element(By.ID, "query").send_keys("impeller cavitation")
        browser.find_element(By.ID, "go").click()
        WebDriverWait(browser, 30).until(lambda b: b.find_elements(By.CSS_SELECTOR, "#results .hit"))
        first = browser.find_elements(By.CSS_SELECTOR, "#results .hit")[0]
        assert rel(first.get_attribute("data-id")) == "docs/guide/pumps.md#0"
        assert first.find_elements(By.TAG_NAME, "mark")
        browser.find_element(By.ID, "ask").click()
        WebDriverWait(browser, 30).until(
            expected_conditions.text_to_be_present_in_element((By.ID, "answer-status"), "citation")
        )
        assert browser.find_element(By.ID, "answer").text == "Cavitation damages the impeller [1] when inlet pressure drops."
        browser.find_element(By.CSS_SELECTOR, "#answer a.cite").click()
        assert browser.find_elements(By.CSS_SELECTOR, "#sources li")
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "search-page.png"))
    finally:
        browser.quit()


def test_chunked_oversized_body_is_refused_on_the_bytes_read(server: _Server) -> None:
    """No Content-Length (chunked transfer): the limit counts what arrives."""

    def body() -> Iterator[bytes]:
        yield b'{"query": "'
        for _ in range(100):
            yield b"pump " * 200  # 100 kB in all
        yield b'"}'

    response = httpx.post(server.url + "/search", content=body(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and "over 65536 bytes" in response.json()["detail"]
    assert httpx.post(server.url + "/search", json={"query": "pump"}).status_code == 200  # and the server goes on


@pytest.mark.parametrize("path", ["/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/search%2f..%2finfo", "/static/x"])
def test_path_tricks_find_nothing(server: _Server, path: str) -> None:
    response = httpx.get(server.url + path)
    assert response.status_code in (404, 405) and "root:" not in response.text


def test_metrics_in_prometheus_text_format(server: _Server) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    for _ in range(3):
        assert httpx.post(server.url + "/search", json={"query": "pump seal", "mode": "dense"}).status_code == 200
    httpx.get(server.url + "/no/such/page")
    response = httpx.get(server.url + "/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    requests = {(s.labels["route"], s.labels["status"]): s.value for s in families["ragtune_requests"].samples
                if s.name == "ragtune_requests_total"}  # fmt: skip
    assert requests[("/search", "200")] >= 3 and requests[("unmatched", "404")] >= 1
    assert all(route in ("/search", "/ask", "/ask/stream", "/info", "/health", "/metrics", "/", "unmatched",
                         "/openapi.json") for route, _ in requests)  # fmt: skip
    batches = {s.name: s.value for s in families["ragtune_query_batch_size"].samples}
    assert batches["ragtune_query_batch_size_count"] >= 3
    latency = [s for s in families["ragtune_request_seconds"].samples if s.name.endswith("_count")]
    assert any(s.labels["route"] == "/search" and s.value >= 3 for s in latency)


def test_searches_beyond_the_limit_wait_their_turn_in_arrival_order(store_dir: str) -> None:
    from ragtune.server import create_app

    engine_independent(store_dir)
    app = create_app(store_dir, generator=None, max_searches=1)
    holder = app.state.holder
    started: list[str] = []
    running_now = [0, 0]  # searches in progress, the most seen at once
    lock = threading.Lock()
    search = holder.search

    def slow_search(request):  # type: ignore[no-untyped-def]
        with lock:
            started.append(request.query)
            running_now[0] += 1
            running_now[1] = max(running_now)
        time.sleep(0.3)
        try:
            return search(request)
        finally:
            with lock:
                running_now[0] -= 1

    holder.search = slow_search
    statuses: list[int] = []
    with _Server(app) as limited:
        httpx.post(limited.url + "/search", json={"query": "warm up", "k": 1}, timeout=30)
        started.clear()

        def client(number: int) -> None:
            time.sleep(0.05 * number)  # arrive in order, each while the first is still being worked on
            response = httpx.post(limited.url + "/search", json={"query": f"pump seal {number}", "k": 2}, timeout=30)
            statuses.append(response.status_code)

        threads = [threading.Thread(target=client, args=(number,)) for number in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert statuses == [200] * 5
    assert running_now[1] == 1
    assert started == [f"pump seal {number}" for number in range(5)]


def test_answers_beyond_the_limit_get_503_and_a_client_that_leaves_frees_its_slot(store_dir: str) -> None:
    from ragtune.server import create_app

    engine_independent(store_dir)
    with running(ChatServer(lambda body: ANSWER, delay=1.0)) as slow, \
            _Server(create_app(store_dir, generator=slow.url, max_asks=1)) as limited:  # fmt: skip
        question = {"question": "What damages the impeller?", "k": 2}
        with httpx.stream("POST", limited.url + "/ask/stream", json=question, timeout=30) as first:
            lines = first.iter_lines()
            assert next(lines) == "event: passages"  # the one slot is taken while tokens trickle in
            busy = httpx.post(limited.url + "/ask", json=question, timeout=30)
            assert busy.status_code == 503 and busy.headers["retry-after"] == "5"
        # the client went away mid-answer (of 11 s): generation stops and the slot comes back long before it would end
        deadline = time.time() + 5
        while (status := httpx.post(limited.url + "/ask", json=question, timeout=30).status_code) == 503:
            assert time.time() < deadline, "the slot of a client that left was never given back"
            time.sleep(0.3)
        assert status == 200
        from prometheus_client.parser import text_string_to_metric_families

        rejected = {s.name: s.value for f in text_string_to_metric_families(httpx.get(limited.url + "/metrics").text)
                    for s in f.samples}["ragtune_ask_rejected_total"]  # fmt: skip
        assert rejected >= 1


def test_several_worker_processes_serve_one_store_and_sum_their_metrics(tmp_path: Path) -> None:
    """On the embedded engine only: the workers share nothing but the store, whichever engine holds it."""
    import signal
    import subprocess
    import sys

    from prometheus_client.parser import text_string_to_metric_families

    from ragtune.store import index_sources

    store_dir = str(tmp_path / "store")
    index_sources(store_dir, [write_docs(tmp_path / "docs")], show_progress=False)

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-c", "from ragtune.cli import app; app()", "serve", "--store", store_dir, "--port",
               str(port), "--generator", "none", "--workers", "2", "--access-log"]  # fmt: skip
    log = (tmp_path / "serve.log").open("w+")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline, ready = time.time() + 180, 0
        while ready < 3:
            assert time.time() < deadline and process.poll() is None, log.seek(0) or log.read()
            try:
                ready = ready + 1 if httpx.get(url + "/health", timeout=5).status_code == 200 else 0
            except httpx.TransportError:
                ready = 0
            time.sleep(0.2)
        found = 0
        while found < 20:  # a worker still loading its model answers 503 (as /health says); the others answer
            assert time.time() < deadline
            with httpx.Client() as client:  # a new connection each time: requests spread over the workers
                status = client.post(url + "/search", json={"query": "pump seal", "k": 2}).status_code
            assert status in (200, 503)
            found += status == 200
        samples = [s for f in text_string_to_metric_families(httpx.get(url + "/metrics").text) for s in f.samples]
        searches = sum(s.value for s in samples if s.name == "ragtune_requests_total" and s.labels["route"] == "/search"
                       and s.labels["status"] == "200")  # fmt: skip
        assert searches == 20  # summed over both workers' counters
    finally:
        os.killpg(process.pid, signal.SIGINT)
        assert process.wait(timeout=30) is not None
    log.seek(0)
    access = [json.loads(line) for line in log.read().splitlines() if line.startswith('{"time"')]
    assert sum(1 for line in access if line["route"] == "/search" and line["status"] == 200) == 20
    assert {line["method"] for line in access} >= {"GET", "POST"}


def test_openai_client_embeddings_equal_the_embedder(store_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The `openai` package's own client, as a user would point it at the server (key as a Bearer token)."""
    import base64

    engine_independent(store_dir)
    import numpy as np
    import openai

    from ragtune.embedding import Embedder
    from ragtune.models import resolve_model
    from ragtune.server import create_app

    monkeypatch.setenv("RAGTUNE_TEST_KEY", "s3cret")
    texts = ["Cavitation damages the impeller.", "How do I close a gate valve?", "bread"]
    with _Server(create_app(store_dir, api_key_env="RAGTUNE_TEST_KEY")) as served:
        client = openai.OpenAI(base_url=served.url + "/v1", api_key="s3cret", max_retries=0)
        assert [m.id for m in client.models.list().data] == ["minilm"]
        for encoding_format in ("float", "base64"):
            response = client.embeddings.create(model="minilm", input=texts, encoding_format=encoding_format)
            if encoding_format == "float":
                vectors = np.array([d.embedding for d in response.data])
            else:  # asked for explicitly, the client hands the strings over as they came
                vectors = np.stack([np.frombuffer(base64.b64decode(d.embedding), dtype="<f4") for d in response.data])
            expected = Embedder(resolve_model("minilm"), purpose="queries").encode(texts)
            assert vectors.shape == (3, 384) and response.usage.prompt_tokens > 10
            assert np.all(np.sum(vectors * expected, axis=1) >= 0.9999)
        single = client.embeddings.create(model="minilm", input="bread").data[0].embedding
        assert np.dot(single, expected[2]) >= 0.9999
        with pytest.raises(openai.NotFoundError, match="this server embeds with 'minilm'"):
            client.embeddings.create(model="text-embedding-3-small", input="bread")
        with pytest.raises(openai.BadRequestError):
            client.embeddings.create(model="minilm", input=[])
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=served.url + "/v1", api_key="wrong", max_retries=0).models.list()


def test_a_server_encoding_queries_in_int8_finds_what_the_float_one_finds(tmp_path: Path) -> None:
    """`--query-precision int8` on a store of 300 SciFact abstracts (embedded engine: the query side is the same for
    both): the model is calibrated on the store's own passages, /info says so, and titles asked as dense queries find
    the same top passage as with float queries."""
    from ragtune.datasets import shipped_dataset
    from ragtune.server import create_app
    from ragtune.store import index_sources, open_store

    rows = [json.loads(line) for _, line in zip(range(300), (shipped_dataset() / "corpus.jsonl").open())]
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "corpus.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    store_dir = str(tmp_path / "store")
    index_sources(store_dir, [tmp_path / "docs"], show_progress=False)
    titles = [row["title"] for row in rows[::15]]
    with open_store(store_dir) as store:
        float_top = [store.hits(ranked)[0].doc_id for ranked in store.dense_search(store.embedder.encode(titles), 1)]
    with _Server(create_app(store_dir, query_precision="int8")) as served:
        assert httpx.get(served.url + "/info").json()["query_encoding"] == "int8/openvino"
        int8_top = [httpx.post(served.url + "/search", json={"query": title, "k": 1, "mode": "dense"}).json()[0]["doc_id"]
                    for title in titles]  # fmt: skip
    assert int8_top == float_top

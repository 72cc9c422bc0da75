"""A local OpenAI-compatible chat-completions server for tests: scripted failures, streaming, slow replies."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = Callable[[dict[str, Any]], str]


class ChatServer:
    """`failures` is a queue of status codes (or "slow") served before normal answers; `reply` writes the text.
    `delay`: seconds between the pieces of a streamed answer; `answer_delay`: seconds before a whole answer."""

    def __init__(
        self, reply: Reply, failures: list[int | str] | None = None, delay: float = 0.0, answer_delay: float = 0.0
    ) -> None:
        self.reply = reply
        self.failures = list(failures or [])
        self.delay = delay
        self.answer_delay = answer_delay
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.url = ""


def _handler(server: ChatServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/v1/models":
                self._json(200, {"object": "list", "data": [{"id": "test-model", "object": "model"}]})
            else:
                self._json(404, {"error": "not found"})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with server.lock:
                server.requests.append(body)
                failure = server.failures.pop(0) if server.failures else None
            if failure == "slow":
                time.sleep(2.0)
                self._json(200, {"choices": [{"message": {"role": "assistant", "content": "too late"}}]})
                return
            if isinstance(failure, int):
                self._json(failure, {"error": {"message": f"scripted {failure}"}}, {"Retry-After": "0"})
                return
            text = server.reply(body)
            if not body.get("stream"):
                time.sleep(server.answer_delay)
                self._json(200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]})
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for piece in _pieces(text):
                event = {"choices": [{"index": 0, "delta": {"content": piece}}]}
                self._chunk(f"data: {json.dumps(event)}\n\n")
                time.sleep(server.delay)
            self._chunk("data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")

        def _chunk(self, text: str) -> None:
            data = text.encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

    return Handler


def _pieces(text: str) -> Iterator[str]:
    words = text.split(" ")
    for index, word in enumerate(words):
        yield word if index == len(words) - 1 else word + " "


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that timed out and hung up is part of the tests


@contextmanager
def running(server: ChatServer) -> Iterator[ChatServer]:
    httpd = _QuietServer(("127.0.0.1", 0), _handler(server))
    server.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()

"""Any OpenAI-compatible chat-completions server (vLLM, Ollama, llama.cpp server, hosted APIs) over HTTP."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from ragtune.errors import RagtuneError
from ragtune.generation.base import Message, TextStream

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
CHARS_PER_TOKEN = 3.0
"""No tokenizer is at hand for a remote model; 3 characters per token over-counts English (≈ 4), so budgets hold."""


class OpenAICompatibleGenerator:
    """Chat completions against `base_url` (ending in `/v1`), with timeout, retry with backoff, and SSE streaming.

    Retries cover connection failures, timeouts and 408/429/5xx answers (honouring `Retry-After`); a stream is retried
    only before its first token, so no text is ever repeated.
    """

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        api_key_env: str = "RAGTUNE_GENERATOR_API_KEY",
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 0.5,
        context_window: int = 4096,
        concurrency: int = 4,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self.client = httpx.Client(headers=headers, timeout=timeout, transport=transport)
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.context_window = context_window
        self.concurrency = concurrency
        self.model = model or self._first_served_model()
        self.name = f"{self.base_url} ({self.model})"

    def _first_served_model(self) -> str:
        response = self._request("GET", "/models")
        try:
            models = [entry["id"] for entry in response.json()["data"]]
        except (ValueError, KeyError, TypeError):
            models = []
        if not models:
            raise RagtuneError(f"{self.base_url}/models lists no model; name one with --generator-model")
        return str(models[0])

    def count_tokens(self, text: str) -> int:
        return int(len(text) / CHARS_PER_TOKEN) + 1

    def prompt_tokens(self, messages: Sequence[Message]) -> int:
        return sum(self.count_tokens(m["content"]) + 4 for m in messages) + 2

    def _payload(self, messages: Sequence[Message], max_new_tokens: int, temperature: float, stream: bool) -> dict:
        return {
            "model": self.model,
            "messages": list(messages),
            "max_tokens": max_new_tokens,
            "temperature": temperature,
            "stream": stream,
        }

    def _wait(self, attempt: int, response: httpx.Response | None) -> None:
        delay = self.backoff * (2**attempt)
        if response is not None and response.headers.get("Retry-After", "").replace(".", "", 1).isdigit():
            delay = min(float(response.headers["Retry-After"]), 30.0)
        time.sleep(delay)

    def _fail(self, problem: str) -> RagtuneError:
        return RagtuneError(f"generator at {self.base_url}: {problem} (after {self.retries + 1} attempts)")

    def _request(self, method: str, path: str, payload: dict | None = None) -> httpx.Response:
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = self.client.request(method, self.base_url + path, json=payload)
            except httpx.TimeoutException:
                if last:
                    raise self._fail(f"no answer within {self.timeout:g} s; raise --generator-timeout") from None
                self._wait(attempt, None)
                continue
            except httpx.TransportError as exc:
                if last:
                    raise self._fail(f"cannot connect ({exc}); is the server running and the URL right?") from None
                self._wait(attempt, None)
                continue
            if response.status_code in RETRYABLE_STATUS and not last:
                self._wait(attempt, response)
                continue
            if response.status_code >= 400:
                raise self._fail(f"HTTP {response.status_code}: {response.text[:300]}")
            return response
        raise AssertionError("unreachable")

    def complete(self, messages: Sequence[Message], max_new_tokens: int, temperature: float = 0.0) -> str:
        response = self._request("POST", "/chat/completions", self._payload(messages, max_new_tokens, temperature, False))
        try:
            return str(response.json()["choices"][0]["message"]["content"] or "").strip()
        except (ValueError, KeyError, IndexError, TypeError):
            raise RagtuneError(f"generator at {self.base_url} sent a reply that is not a chat completion") from None

    def stream(self, messages: Sequence[Message], max_new_tokens: int, temperature: float = 0.0) -> TextStream:
        payload = self._payload(messages, max_new_tokens, temperature, True)
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            started = False
            try:
                with self.client.stream("POST", self.base_url + "/chat/completions", json=payload) as response:
                    if response.status_code in RETRYABLE_STATUS and not last:
                        self._wait(attempt, response)
                        continue
                    if response.status_code >= 400:
                        response.read()
                        raise self._fail(f"HTTP {response.status_code}: {response.text[:300]}")
                    for piece in _sse_deltas(response.iter_lines()):
                        started = True
                        yield piece
                    return
            except httpx.TimeoutException:
                if started or last:
                    raise self._fail(f"stream stalled for {self.timeout:g} s") from None
            except httpx.TransportError as exc:
                if started or last:
                    raise self._fail(f"connection lost ({exc})") from None
            self._wait(attempt, None)

    def generate_batch(
        self, conversations: Sequence[Sequence[Message]], max_new_tokens: int, temperature: float = 0.0
    ) -> list[str]:
        """Concurrent requests (the server batches them); answers come back in input order."""
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(lambda c: self.complete(c, max_new_tokens, temperature), conversations))


def _sse_deltas(lines: Iterator[str]) -> Iterator[str]:
    """The text pieces of a chat-completions event stream (`data: {...}` lines, ended by `data: [DONE]`)."""
    for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        try:
            event: Any = json.loads(data)
            piece = event["choices"][0].get("delta", {}).get("content")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise RagtuneError(f"the generator's event stream has a line that is not a chat chunk: {data[:200]}") from None
        if piece:
            yield piece

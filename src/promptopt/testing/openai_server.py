"""A small OpenAI-compatible chat-completions server for tests, docs and local experiments.

It speaks just enough of the API for OpenAI clients (and litellm's ``openai/`` provider): ``POST
/v1/chat/completions`` (or ``/chat/completions``), non-streaming, one choice. Answers come from a
Python callable ``responder(messages, params) -> str``; ``stop`` and ``max_tokens`` are applied to its
output and ``usage`` counts white-space tokens. Faults can be injected to exercise clients: the first
``fail_first`` requests answer ``fail_status``, ``fault`` can fail chosen requests, ``latency`` delays
every answer, ``hang`` never answers (until the server stops) and ``fault_rates`` (:class:`FaultRates`)
injects 429s with Retry-After, 500s, answers slower than the client's timeout, malformed JSON, truncated
bodies and connection resets at set rates. Every request is logged with the fault it got.

>>> with OpenAIServer(lambda messages, params: "Paris") as srv:  # doctest: +SKIP
...     client = openai.OpenAI(base_url=srv.base_url + "/v1", api_key="sk-test")

Run ``python -m promptopt.testing.openai_server --port 8000`` for an echo server.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import random
import re
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Responder = Callable[[list[dict[str, Any]], dict[str, Any]], str]
"""``responder(messages, params) -> str``: ``messages`` as sent, ``params`` the rest of the request body."""

Fault = Callable[[list[dict[str, Any]], dict[str, Any]], "int | None"]
"""``fault(messages, params) -> status``: an HTTP status to fail this request with, or None to answer it."""

CHAT_PATHS = ("/v1/chat/completions", "/chat/completions")
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


def echo_responder(messages: list[dict[str, Any]], params: dict[str, Any]) -> str:
    """Answer with the content of the last user message."""
    return next((str(m.get("content", "")) for m in reversed(messages) if m.get("role") == "user"), "")


def count_tokens(text: str) -> int:
    """White-space token count (the server's notion of a token)."""
    return len(text.split())


def apply_limits(text: str, stop: str | list[str] | None, max_tokens: int | None) -> tuple[str, str]:
    """Cut ``text`` at the first stop string, then to ``max_tokens`` tokens; return it and a finish reason."""
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    if cut >= 0:
        text = text[:cut]
    if max_tokens is not None:
        tokens = list(re.finditer(r"\S+", text))
        if len(tokens) > max_tokens:
            return text[: tokens[max_tokens - 1].end()] if max_tokens > 0 else "", "length"
    return text, "stop"


FAULT_KINDS = ("rate_limit", "server_error", "timeout", "malformed", "truncated", "reset")
"""What :class:`FaultRates` can inject, in the order the draw tries them."""


@dataclass(frozen=True, kw_only=True)
class FaultRates:
    """Probabilities of injected faults (their sum is at most 1; the rest is answered normally).

    ``rate_limit``: 429 with ``Retry-After`` (and ``retry-after-ms``) of ``retry_after`` seconds;
    ``server_error``: 500; ``timeout``: the answer comes after ``slow`` seconds (set it above the client's
    timeout); ``malformed``: 200 whose body is not JSON; ``truncated``: 200 whose body stops short of its
    Content-Length; ``reset``: the connection is reset without an answer. The draw depends only on the request
    body, how many times that body was sent before and ``seed``, so a rerun meets the same faults whatever the
    order requests arrive in.
    """

    rate_limit: float = 0.0
    server_error: float = 0.0
    timeout: float = 0.0
    malformed: float = 0.0
    truncated: float = 0.0
    reset: float = 0.0
    retry_after: float = 0.05
    slow: float = 5.0
    seed: int = 0

    def __post_init__(self) -> None:
        rates = [getattr(self, kind) for kind in FAULT_KINDS]
        if min(rates) < 0 or sum(rates) > 1:
            raise ValueError(f"fault rates must be >= 0 and sum to at most 1, got {rates}")

    def draw(self, key: str, attempt: int) -> str | None:
        """The fault (one of :data:`FAULT_KINDS`) for attempt ``attempt`` (from 0) of the request ``key``, or None."""
        u = random.Random(f"{self.seed}:{key}:{attempt}").random()
        for kind in FAULT_KINDS:
            u -= getattr(self, kind)
            if u < 0:
                return kind
        return None


@dataclass
class LoggedRequest:
    """One request as the server saw it; ``status`` (None: never answered) and ``ended`` are set when done.

    ``key`` identifies the request body (repeats of one request share it), ``fault`` is what was injected (a
    :data:`FAULT_KINDS` name, ``"status"`` for ``fail_first`` / ``fault``, or None).
    """

    path: str
    body: dict[str, Any]
    started: float
    key: str = ""
    status: int | None = None
    ended: float | None = None
    fault: str | None = None

    @property
    def answered(self) -> bool:
        """A complete, well-formed 200 answer was sent."""
        return self.status == 200 and self.fault is None


@dataclass
class _Reply:
    """What the handler sends: ``fault`` (malformed, truncated, reset) changes how the payload goes out."""

    status: int
    payload: dict[str, Any]
    fault: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


def body_key(body: dict[str, Any]) -> str:
    """A short hash of a request body (canonical JSON)."""
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


class OpenAIServer:
    """An OpenAI-compatible server on a background thread; use as a context manager.

    Fault settings are plain attributes and may be changed while the server runs. ``api_key``, when
    given, is required as a bearer token (401 otherwise). ``max_in_flight`` is the most requests that
    were being handled at once. A subclass serves more paths by extending :attr:`paths`, :meth:`_invalid` and
    :meth:`_payload` (:mod:`promptopt.testing.openai_completions`).
    """

    paths: tuple[str, ...] = CHAT_PATHS

    def __init__(
        self,
        responder: Responder = echo_responder,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
        fail_first: int = 0,
        fail_status: int = 429,
        fault: Fault | None = None,
        hang: bool = False,
        fault_rates: FaultRates | None = None,
        api_key: str | None = None,
        verbose: bool = False,
    ) -> None:
        self.responder = responder
        self.latency = latency
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.fault = fault
        self.hang = hang
        self.fault_rates = fault_rates
        self.api_key = api_key
        self.verbose = verbose
        self.requests: list[LoggedRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._seen: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd = _HTTPServer((host, port), _make_handler(self))
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """``http://host:port`` (without ``/v1``)."""
        host, port = self._httpd.server_address[:2]
        if isinstance(host, (bytes, bytearray)):  # never after bind (getsockname gives str), but the stub allows it
            host = host.decode()
        return f"http://{host}:{port}"

    def start(self) -> OpenAIServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="openai-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket; hanging or delayed requests are dropped. Not restartable."""
        self._stopping.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """Serve on the calling thread until interrupted (the command-line mode)."""
        try:
            self._httpd.serve_forever()
        finally:
            self._stopping.set()
            self._httpd.server_close()

    def attempts(self) -> dict[str, int]:
        """How many times each request body (:func:`body_key`) was sent."""
        with self._lock:
            return dict(self._seen)

    def _begin(self, entry: LoggedRequest) -> tuple[int, int]:
        """Log ``entry``; its number (from 1) and how many times its body was sent before."""
        with self._lock:
            self.requests.append(entry)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            attempt = self._seen.get(entry.key, 0)
            self._seen[entry.key] = attempt + 1
            return len(self.requests), attempt

    def _end(self, entry: LoggedRequest, reply: _Reply | None) -> None:
        with self._lock:
            self.in_flight -= 1
            entry.ended = time.monotonic()
            if reply is not None:
                entry.status = None if reply.fault == "reset" else reply.status
                entry.fault = reply.fault

    def _answer(self, path: str, body: dict[str, Any], headers: dict[str, str]) -> _Reply:
        """The reply to one chat-completions request (logged, counted in flight)."""
        entry = LoggedRequest(path=path, body=body, started=time.monotonic(), key=body_key(body))
        number, attempt = self._begin(entry)
        entry.fault = self.fault_rates.draw(entry.key, attempt) if self.fault_rates is not None else None
        reply: _Reply | None = None
        try:
            reply = self._respond(number, entry.fault, path, body, headers)
            return reply
        finally:
            self._end(entry, None if self._stopping.is_set() else reply)

    def _respond(
        self, number: int, injected: str | None, path: str, body: dict[str, Any], headers: dict[str, str]
    ) -> _Reply:
        if self.api_key is not None and headers.get("authorization") != f"Bearer {self.api_key}":
            return _Reply(401, _error(401, "Incorrect API key provided."))
        problem = self._invalid(path, body)
        if problem is not None:
            return _Reply(400, _error(400, problem))
        if self.hang:
            self._stopping.wait()
        elif self.latency > 0 or injected == "timeout":
            self._stopping.wait(self.fault_rates.slow if injected == "timeout" and self.fault_rates else self.latency)
        if self._stopping.is_set():
            return _Reply(503, _error(503, "server stopped"))
        messages, params = body.get("messages") or [], {k: v for k, v in body.items() if k != "messages"}
        failure = self.fail_status if number <= self.fail_first else None
        if failure is None and self.fault is not None:
            failure = self.fault(messages, params)
        if failure is not None:
            return _Reply(failure, _error(failure, f"injected failure of request {number}"), fault="status")
        if injected == "rate_limit" and self.fault_rates is not None:
            wait = self.fault_rates.retry_after
            retry = {"Retry-After": str(math.ceil(wait)), "retry-after-ms": str(round(wait * 1000))}
            return _Reply(429, _error(429, f"injected rate limit on request {number}"), injected, retry)
        if injected == "server_error":
            return _Reply(500, _error(500, f"injected server error on request {number}"), injected)
        return self._payload(number, path, body, injected)

    def _invalid(self, path: str, body: dict[str, Any]) -> str | None:
        """Why ``body`` is a bad request to ``path`` (answered 400), or None."""
        if not isinstance(body.get("messages"), list):
            return "'messages' must be a list"
        if body.get("stream"):
            return "this test server does not support streaming"
        return None

    def _payload(self, number: int, path: str, body: dict[str, Any], injected: str | None) -> _Reply:
        """The answer to a valid request that gets no injected failure (a chat completion)."""
        messages, params = body["messages"], {k: v for k, v in body.items() if k != "messages"}
        try:
            raw = self.responder(messages, params)
        except Exception as exc:
            return _Reply(500, _error(500, f"responder failed: {type(exc).__name__}: {exc}"))
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        text, finish = apply_limits(raw, body.get("stop"), max_tokens)
        prompt_tokens = sum(count_tokens(_content(m)) for m in messages)
        completion_tokens = count_tokens(text)
        payload = {
            "id": f"chatcmpl-{number}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "test-model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
        return _Reply(200, payload, injected)  # 'timeout' answers (late); malformed/truncated/reset change the send


def _content(message: dict[str, Any]) -> str:
    content = message.get("content") or ""
    if isinstance(content, list):  # content parts
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return str(content)


def _error(status: int, message: str) -> dict[str, Any]:
    kind = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": str(status)}}


class _HTTPServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (killed, timed out, reset) is no server error: no traceback for it."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _make_handler(server: OpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            path = self.path.split("?", 1)[0].rstrip("/")
            try:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                self._send(400, _error(400, "request body is not valid JSON"))
                return
            if path not in server.paths:
                self._send(404, _error(404, f"unknown path {path!r}; use {CHAT_PATHS[0]}"))
                return
            if not isinstance(body, dict):
                self._send(400, _error(400, "request body must be a JSON object"))
                return
            headers = {k.lower(): v for k, v in self.headers.items()}
            reply = server._answer(path, body, headers)
            if server._stopping.is_set():
                self.close_connection = True
                return
            if reply.fault == "reset":  # close with SO_LINGER 0: the client gets a TCP reset, no answer
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
                self.close_connection = True
                return
            self._send(reply.status, reply.payload, fault=reply.fault, headers=reply.headers)

        def do_GET(self) -> None:
            self._send(404, _error(404, f"unknown path {self.path!r}; POST to {CHAT_PATHS[0]}"))

        def _send(
            self,
            status: int,
            payload: dict[str, Any],
            *,
            fault: str | None = None,
            headers: dict[str, str] | None = None,
        ) -> None:
            data = json.dumps(payload).encode()
            length = len(data)
            if fault in ("malformed", "truncated"):  # malformed: a complete message that is not JSON
                data = data[: len(data) // 2]
                length = length if fault == "truncated" else len(data)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(length))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            try:
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (e.g. a timeout)
                self.close_connection = True
            if fault == "truncated":  # close before the promised length: the body stops short
                self.close_connection = True

        def log_message(self, format: str, *args: Any) -> None:
            if server.verbose:
                super().log_message(format, *args)

    return Handler


def main(argv: list[str] | None = None) -> None:
    """Command line: serve the echo responder until Ctrl-C."""
    parser = argparse.ArgumentParser(description="OpenAI-compatible echo server (for tests and docs).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds to wait before each answer")
    args = parser.parse_args(argv)
    server = OpenAIServer(echo_responder, host=args.host, port=args.port, latency=args.latency, verbose=True)
    print(f"Serving an echo model at {server.base_url}/v1 (Ctrl-C to stop)", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()

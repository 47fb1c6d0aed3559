"""A small OpenAI-compatible chat-completions server for tests, docs and local experiments.

It speaks just enough of the API for OpenAI clients (and litellm's ``openai/`` provider): ``POST
/v1/chat/completions`` (or ``/chat/completions``), non-streaming, one choice. Answers come from a
Python callable ``responder(messages, params) -> str``; ``stop`` and ``max_tokens`` are applied to its
output and ``usage`` counts white-space tokens. Faults can be injected to exercise clients: the first
``fail_first`` requests answer ``fail_status``, ``fault`` can fail chosen requests, ``latency`` delays
every answer and ``hang`` never answers (until the server stops). Every request is logged.

>>> with OpenAIServer(lambda messages, params: "Paris") as srv:  # doctest: +SKIP
...     client = openai.OpenAI(base_url=srv.base_url + "/v1", api_key="sk-test")

Run ``python -m promptopt.testing.openai_server --port 8000`` for an echo server.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass
class LoggedRequest:
    """One request as the server saw it; ``status`` (None: never answered) and ``ended`` are set when done."""

    path: str
    body: dict[str, Any]
    started: float
    status: int | None = None
    ended: float | None = None


class OpenAIServer:
    """An OpenAI-compatible server on a background thread; use as a context manager.

    Fault settings are plain attributes and may be changed while the server runs. ``api_key``, when
    given, is required as a bearer token (401 otherwise). ``max_in_flight`` is the most requests that
    were being handled at once.
    """

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
        api_key: str | None = None,
        verbose: bool = False,
    ) -> None:
        self.responder = responder
        self.latency = latency
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.fault = fault
        self.hang = hang
        self.api_key = api_key
        self.verbose = verbose
        self.requests: list[LoggedRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd = ThreadingHTTPServer((host, port), _make_handler(self))
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """``http://host:port`` (without ``/v1``)."""
        host, port = self._httpd.server_address[:2]
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

    def _begin(self, entry: LoggedRequest) -> int:
        with self._lock:
            self.requests.append(entry)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            return len(self.requests)

    def _end(self, entry: LoggedRequest, status: int | None) -> None:
        with self._lock:
            self.in_flight -= 1
            entry.status, entry.ended = status, time.monotonic()

    def _answer(self, path: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """Status and JSON body for one chat-completions request (logged, counted in flight)."""
        entry = LoggedRequest(path=path, body=body, started=time.monotonic())
        number = self._begin(entry)
        status: int | None = None
        try:
            status, payload = self._respond(number, body, headers)
            return status, payload
        finally:
            self._end(entry, None if self._stopping.is_set() else status)

    def _respond(self, number: int, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if self.api_key is not None and headers.get("authorization") != f"Bearer {self.api_key}":
            return 401, _error(401, "Incorrect API key provided.")
        messages = body.get("messages")
        if not isinstance(messages, list):
            return 400, _error(400, "'messages' must be a list")
        if body.get("stream"):
            return 400, _error(400, "this test server does not support streaming")
        if self.hang:
            self._stopping.wait()
        elif self.latency > 0:
            self._stopping.wait(self.latency)
        if self._stopping.is_set():
            return 503, _error(503, "server stopped")
        params = {k: v for k, v in body.items() if k != "messages"}
        failure = self.fail_status if number <= self.fail_first else None
        if failure is None and self.fault is not None:
            failure = self.fault(messages, params)
        if failure is not None:
            return failure, _error(failure, f"injected failure of request {number}")
        try:
            raw = self.responder(messages, params)
        except Exception as exc:
            return 500, _error(500, f"responder failed: {type(exc).__name__}: {exc}")
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        text, finish = apply_limits(raw, body.get("stop"), max_tokens)
        prompt_tokens = sum(count_tokens(_content(m)) for m in messages)
        completion_tokens = count_tokens(text)
        return 200, {
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


def _content(message: dict[str, Any]) -> str:
    content = message.get("content") or ""
    if isinstance(content, list):  # content parts
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return str(content)


def _error(status: int, message: str) -> dict[str, Any]:
    kind = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": str(status)}}


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
            if path not in CHAT_PATHS:
                self._send(404, _error(404, f"unknown path {path!r}; use {CHAT_PATHS[0]}"))
                return
            if not isinstance(body, dict):
                self._send(400, _error(400, "request body must be a JSON object"))
                return
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, payload = server._answer(path, body, headers)
            if server._stopping.is_set():
                self.close_connection = True
                return
            self._send(status, payload)

        def do_GET(self) -> None:
            self._send(404, _error(404, f"unknown path {self.path!r}; POST to {CHAT_PATHS[0]}"))

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            try:
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (e.g. a timeout)
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

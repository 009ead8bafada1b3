"""A thin bridge on 127.0.0.1: Cohere v1, Cohere v2 and Gemini in front of an OpenAI-compatible
server (the local llama.cpp model), so that every wire protocol gets real model output in its
own exact format.

Each request is read with its protocol's `parse_request` / `parse_params` / `parse_tools`, sent
upstream with `openai.build_request`, the answer read with `openai.parse_response` and written
back with the protocol's `build_response`: the adapters' own functions, both ways. Routes:
`POST /v1/chat` (Cohere v1), `POST /v2/chat` (Cohere v2), `POST /v1beta/models/{model}:
generateContent` and `:streamGenerateContent` (Gemini). A streamed request (`stream: true`,
or Gemini's streamGenerateContent) streams upstream too, and each upstream chunk's text is
sent on at once in the protocol's own events (`stream_start` / `stream_text` / `stream_end`
of its module: Cohere v1 NDJSON, Cohere v2 SSE, Gemini SSE), the usage and finish event
last. Token counts are the upstream's; nothing is billed, so no `billed_units` are invented.

    python -m harness serve-local --model smollm2 --bridge-port 8083
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Generator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import ModuleType
from typing import Any

import httpx

from .providers import cohere_v1, cohere_v2, gemini, openai
from .providers._common import StreamScanner, dig

HOST = "127.0.0.1"
ROUTES: dict[str, ModuleType] = {"/v1/chat": cohere_v1, "/v2/chat": cohere_v2}
GEMINI_PATH = re.compile(r"^/v1beta/models/([^/:]+):(generateContent|streamGenerateContent)$")
TIMEOUT = 600.0


def translate(adapter: ModuleType, body: Any, model: str) -> dict:
    """The OpenAI chat request that asks what `body` (in `adapter`'s protocol) asks."""
    params = {**adapter.parse_params(body), "model": model}
    return openai.build_request(adapter.parse_request(body), params, adapter.parse_tools(body))


def _error_body(adapter: ModuleType, status: int, message: str) -> dict:
    if adapter is gemini:
        return {"error": {"code": status, "message": message}}
    return {"message": message}


def _start(adapter: ModuleType, response_id: str | None) -> list[bytes]:
    return [] if adapter is gemini else adapter.stream_start(response_id)


def _text(adapter: ModuleType, text: str, model: str, response_id: str | None) -> list[bytes]:
    return adapter.stream_text(text, model, response_id) if adapter is gemini \
        else adapter.stream_text(text)


class Bridge:
    """The bridge in a background thread: `with Bridge(upstream_url) as b: b.base_url`."""

    def __init__(self, upstream: str, port: int = 0):
        self.upstream = upstream.rstrip("/")
        self.client = httpx.Client(timeout=TIMEOUT)
        self.httpd = ThreadingHTTPServer((HOST, port), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.httpd.server_address[1]}"

    def __enter__(self) -> Bridge:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.client.close()

    def answer(self, path: str, raw: bytes) -> tuple[int, bytes | Generator[bytes, None, None], str]:
        """(status, body, content type) of the reply to one request; a streamed reply's body
        is an iterator of its events, translated from the upstream's as they arrive."""
        route = path.split("?")[0]
        match = GEMINI_PATH.match(route)
        adapter = gemini if match else ROUTES.get(route)
        if adapter is None:
            return 404, json.dumps({"message": f"no route {route}"}).encode(), "application/json"
        try:
            body = json.loads(raw)
            model = match.group(1) if match else str(body.get("model") or "local")
            upstream = translate(adapter, body, model)
        except (ValueError, AttributeError) as exc:
            return 400, json.dumps(_error_body(adapter, 400, str(exc))).encode(), "application/json"
        stream = match.group(2) == "streamGenerateContent" if match else body.get("stream") is True
        request = self.client.build_request(
            "POST", self.upstream + openai.PATH,
            json=openai.stream_request(upstream) if stream else upstream)
        try:
            response = self.client.send(request, stream=True)
        except httpx.HTTPError as exc:
            message = f"upstream {self.upstream} unreachable: {exc}"
            return 502, json.dumps(_error_body(adapter, 502, message)).encode(), "application/json"
        if stream and response.status_code < 400:
            kind = "application/stream+json" if adapter.STREAM_NDJSON else "text/event-stream"
            return 200, self._stream(adapter, response, model), kind
        try:
            response.read()
        finally:
            response.close()
        reply = openai.parse_response(response.status_code, dict(response.headers),
                                      response.content)
        if response.status_code >= 400:
            error = _error_body(adapter, response.status_code, reply.error or "upstream error")
            return response.status_code, json.dumps(error).encode(), "application/json"
        payload = json.dumps(adapter.build_response(reply, model), ensure_ascii=False).encode()
        return 200, payload, "application/json"

    @staticmethod
    def _stream(adapter: ModuleType, response: httpx.Response, model: str) -> Generator[bytes, None, None]:
        """`adapter`'s stream events, each as soon as the upstream chunk behind it arrives;
        the end events from the whole upstream stream (its finish reason, usage, tool calls)."""
        scanner = StreamScanner(ndjson=False)
        received: list[bytes] = []
        started = False
        try:
            for data in response.iter_raw():
                received.append(data)
                for event in scanner.feed(data):
                    if not started:
                        started = True
                        yield from _start(adapter, dig(event, "id"))
                    if text := openai.chunk_text(event):
                        yield from _text(adapter, text, dig(event, "model") or model,
                                         dig(event, "id"))
        finally:
            response.close()
        reply = openai.parse_response(200, dict(response.headers), b"".join(received))
        if not started:
            yield from _start(adapter, reply.response_id)
        yield from adapter.stream_end(reply, model)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        bridge = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                status, payload, content_type = bridge.answer(self.path, raw)
                self.send_response(status)
                self.send_header("content-type", content_type)
                if isinstance(payload, bytes):
                    self.send_header("content-length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                try:
                    for event in payload:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                except (httpx.HTTPError, ValueError, OSError):  # either side broke off
                    self.close_connection = True
                finally:
                    payload.close()  # closes the upstream stream too

            def do_GET(self) -> None:
                payload = b'{"status":"ok"}' if self.path == "/health" else b'{"message":"no route"}'
                self.send_response(200 if self.path == "/health" else 404)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        return Handler

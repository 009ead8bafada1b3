"""A thin bridge on 127.0.0.1: Cohere v1, Cohere v2 and Gemini in front of an OpenAI-compatible
server (the local llama.cpp model), so that every wire protocol gets real model output in its
own exact format.

Each request is read with its protocol's `parse_request` / `parse_params` / `parse_tools`, sent
upstream with `openai.build_request`, the answer read with `openai.parse_response` and written
back with the protocol's `build_response`: the adapters' own functions, both ways. Routes:
`POST /v1/chat` (Cohere v1), `POST /v2/chat` (Cohere v2), `POST /v1beta/models/{model}:
generateContent` and `:streamGenerateContent` (Gemini; the stream is one SSE chunk). Token
counts are the upstream's; nothing is billed, so no `billed_units` are invented.

    python -m harness serve-local --model smollm2 --bridge-port 8083
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import ModuleType
from typing import Any

import httpx

from .providers import cohere_v1, cohere_v2, gemini, openai

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

    def answer(self, path: str, raw: bytes) -> tuple[int, bytes, str]:
        """(status, body, content type) of the reply to one request."""
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
        try:
            response = self.client.post(self.upstream + openai.PATH, json=upstream)
        except httpx.HTTPError as exc:
            message = f"upstream {self.upstream} unreachable: {exc}"
            return 502, json.dumps(_error_body(adapter, 502, message)).encode(), "application/json"
        reply = openai.parse_response(response.status_code, dict(response.headers),
                                      response.content)
        if response.status_code >= 400:
            error = _error_body(adapter, response.status_code, reply.error or "upstream error")
            return response.status_code, json.dumps(error).encode(), "application/json"
        payload = json.dumps(adapter.build_response(reply, model), ensure_ascii=False).encode()
        if match and match.group(2) == "streamGenerateContent":
            return 200, b"data: " + payload + b"\r\n\r\n", "text/event-stream"
        return 200, payload, "application/json"

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
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                payload = b'{"status":"ok"}' if self.path == "/health" else b'{"message":"no route"}'
                self.send_response(200 if self.path == "/health" else 404)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        return Handler

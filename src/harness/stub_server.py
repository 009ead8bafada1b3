"""A deterministic chat server on 127.0.0.1 that speaks every wire protocol harness knows.

It is not a model: its replies are built from the request (turn count, the last user message,
the first one), so that tests and the shipped demo cassettes exercise history, `max_tokens`
cut-offs, usage and errors over real HTTP. A request that offers tools and ends in a user
message gets a tool call instead, in that protocol's shape: of the first offered tool whose
name the last user message holds, else of the first tool, with each required parameter set
to a placeholder of its type ("stub", 1, true, [], {}); after a tool result it answers text.
Gemini is served at `/v1beta/models/{model}:generateContent` and, as SSE,
`:streamGenerateContent?alt=sse`; a request with `stream: true` gets its protocol's stream
(one event a word, each `chunk_delay` seconds after the one before it or the headers). With
`fault_rate` it also misbehaves on a seeded share of requests (429 with Retry-After, 500, a
dropped connection, a stall past the client's timeout, a body cut short, invalid JSON), the
way real APIs do.

    python -m harness serve-stub --port 8099
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import json
import random
import re
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from harness.messages import Tool, ToolCall
from harness.providers import protocol_module
from harness.providers._common import load_json

FAULTS = ("429", "500", "drop", "stall", "truncated", "bad_json")
AUTH_HEADERS = ("authorization", "x-api-key", "api-key", "x-goog-api-key")


def _words(text: str) -> list[str]:
    return text.split()


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def compose_reply(model: str, user_messages: list[str], all_text: str, max_tokens: int | None
                  ) -> tuple[str, bool, int, int]:
    """(text, cut_off, input_tokens, output_tokens): words stand in for tokens."""
    last = user_messages[-1] if user_messages else ""
    first = user_messages[0] if user_messages else ""
    parts = [f"{model} reply to turn {len(user_messages)}: you said “{' '.join(_words(last)[:12])}”."]
    if len(user_messages) > 1:
        parts.append(f"Earlier you asked “{' '.join(_words(first)[:8])}”.")
    if "long" in last.lower() or "detail" in last.lower():
        parts.append(" ".join(f"Point {i}: the answer keeps going." for i in range(1, 40)))
    words = _words(" ".join(parts))
    cut = max_tokens is not None and len(words) > max_tokens
    if cut:
        words = words[:max_tokens]
    return " ".join(words), cut, len(_words(all_text)), len(words)


def _openai(body: dict, model: str, text: str, cut: bool, n_in: int, n_out: int,
            call: ToolCall | None = None) -> dict:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if call:
        message = {"role": "assistant", "content": None, "tool_calls": [
            {"id": call.id, "type": "function",
             "function": {"name": call.name, "arguments": call.arguments}}]}
    return {
        "id": f"chatcmpl-{uuid.uuid5(uuid.NAMESPACE_OID, json.dumps(body, sort_keys=True))}",
        "object": "chat.completion",
        "created": 1767225600,
        "model": model,
        "choices": [{"index": 0, "message": message,
                     "finish_reason": "tool_calls" if call else "length" if cut else "stop"}],
        "usage": {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out},
    }


def _cohere_v2(body: dict, model: str, text: str, cut: bool, n_in: int, n_out: int,
               call: ToolCall | None = None) -> dict:
    message: dict[str, Any] = {"role": "assistant", "content": [{"type": "text", "text": text}]}
    if call:
        message = {"role": "assistant", "tool_plan": f"I will call {call.name}.", "tool_calls": [
            {"id": call.id, "type": "function",
             "function": {"name": call.name, "arguments": call.arguments}}]}
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_OID, json.dumps(body, sort_keys=True))),
        "message": message,
        "finish_reason": "TOOL_CALL" if call else "MAX_TOKENS" if cut else "COMPLETE",
        "usage": {"billed_units": {"input_tokens": n_in, "output_tokens": n_out},
                  "tokens": {"input_tokens": n_in + 7, "output_tokens": n_out}},
    }


def _cohere_v1(body: dict, model: str, text: str, cut: bool, n_in: int, n_out: int,
               call: ToolCall | None = None) -> dict:
    out: dict[str, Any] = {
        "response_id": str(uuid.uuid5(uuid.NAMESPACE_OID, json.dumps(body, sort_keys=True))),
        "text": "" if call else text,
        "generation_id": str(uuid.uuid5(uuid.NAMESPACE_URL, text)),
        "finish_reason": "MAX_TOKENS" if cut and not call else "COMPLETE",
        "meta": {"api_version": {"version": "1"},
                 "billed_units": {"input_tokens": n_in, "output_tokens": n_out},
                 "tokens": {"input_tokens": n_in + 7, "output_tokens": n_out}},
    }
    if call:
        out["tool_calls"] = [{"name": call.name, "parameters": json.loads(call.arguments)}]
    return out


def _anthropic(body: dict, model: str, text: str, cut: bool, n_in: int, n_out: int,
               call: ToolCall | None = None) -> dict:
    content: list[dict[str, Any]] = [{"type": "text", "text": text}]
    if call:
        content = [{"type": "tool_use", "id": call.id, "name": call.name,
                    "input": json.loads(call.arguments)}]
    return {
        "id": f"msg_{uuid.uuid5(uuid.NAMESPACE_OID, json.dumps(body, sort_keys=True)).hex}",
        "type": "message", "role": "assistant", "model": model,
        "content": content,
        "stop_reason": "tool_use" if call else "max_tokens" if cut else "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": n_in, "output_tokens": n_out},
    }


def _gemini(body: dict, model: str, text: str, cut: bool, n_in: int, n_out: int,
            call: ToolCall | None = None) -> dict:
    parts: list[dict[str, Any]] = [{"text": text}]
    if call:
        parts = [{"functionCall": {"id": call.id, "name": call.name,
                                   "args": json.loads(call.arguments)}}]
    return {
        "candidates": [{"content": {"role": "model", "parts": parts},
                        "finishReason": "MAX_TOKENS" if cut and not call else "STOP",
                        "index": 0}],
        "usageMetadata": {"promptTokenCount": n_in, "candidatesTokenCount": n_out,
                          "totalTokenCount": n_in + n_out},
        "modelVersion": model,
        "responseId": str(uuid.uuid5(uuid.NAMESPACE_OID, json.dumps(body, sort_keys=True))),
    }


STREAM_TYPES = {"cohere-v1": "application/stream+json"}


def stream_chunks(protocol: str, payload: dict, request: dict) -> list[bytes]:
    """The stream saying what the reply `payload` says, in the protocol's own events, a word
    an event (words stand in for tokens); OpenAI's usage chunk only when the request asks."""
    adapter = protocol_module(protocol)
    reply = adapter.parse_response(200, {}, json.dumps(payload).encode())
    if protocol == "openai":
        asked = bool((request.get("stream_options") or {}).get("include_usage"))
        return adapter.stream_response(reply, usage=asked)
    return adapter.stream_response(reply)


PLACEHOLDERS = {"string": "stub", "integer": 1, "number": 1, "boolean": True, "array": [],
                "object": {}}


def tool_call_for(tools: tuple[Tool, ...], last_user: str, turn: int) -> ToolCall:
    """The stub's deterministic call: the first tool named in the last user text, else the
    first tool; required parameters get a placeholder of their type."""
    tool = next((t for t in tools if t.name in last_user), tools[0])
    props = tool.parameters.get("properties") or {}
    args = {name: PLACEHOLDERS.get((props.get(name) or {}).get("type"), "stub")
            for name in tool.parameters.get("required") or ()}
    return ToolCall(id=f"call_stub_{turn}", name=tool.name, arguments=json.dumps(args))


def _user_texts(path: str, body: dict) -> tuple[list[str], str]:
    """The user messages of a request and all of its text, per protocol."""
    if _GEMINI.match(path.split("?")[0]):
        contents = body.get("contents") or []
        texts = [[p.get("text", "") for p in c.get("parts") or [] if "text" in p]
                 for c in contents]
        users = [" ".join(t) for c, t in zip(contents, texts, strict=True)
                 if c.get("role", "user") == "user" and t]
        system = [p.get("text", "") for p in (body.get("systemInstruction") or {}).get("parts") or []]
        return users, " ".join([*system, *(" ".join(t) for t in texts)])
    if path.endswith("/chat") and "message" in body:  # Cohere v1
        history = body.get("chat_history") or []
        users = [h.get("message", "") for h in history if str(h.get("role")).upper() == "USER"]
        users.append(body.get("message", ""))
        everything = [body.get("preamble") or "", *(h.get("message", "") for h in history),
                      body.get("message", "")]
        return users, " ".join(everything)
    messages = body.get("messages") or []
    users = [_content_text(m.get("content")) for m in messages if m.get("role") == "user"]
    everything = [_content_text(body.get("system"))] + [_content_text(m.get("content"))
                                                         for m in messages]
    return users, " ".join(everything)


ROUTES = {
    "/v1/chat/completions": _openai,
    "/v2/chat": _cohere_v2,
    "/v1/chat": _cohere_v1,
    "/v1/messages": _anthropic,
    "/v1beta/models/{model}:generateContent": _gemini,
}
PROTOCOLS = {_openai: "openai", _cohere_v2: "cohere-v2", _cohere_v1: "cohere-v1",
             _anthropic: "anthropic", _gemini: "gemini"}
_GEMINI = re.compile(r"^/v1beta/models/([^/:]+):(generateContent|streamGenerateContent)$")


def _route(path: str):
    """The reply builder for a request path (Gemini's names the model), or None."""
    path = path.split("?")[0]
    return _gemini if _GEMINI.match(path) else ROUTES.get(path)


def _tool_call(protocol: str, body: dict, users: list[str]) -> ToolCall | None:
    """The stub's tool call when the request offers tools and ends in a user message."""
    if not body.get("tools") and not body.get("functions"):  # every protocol names them so
        return None
    adapter = protocol_module(protocol)
    try:
        tools, messages = adapter.parse_tools(body), adapter.parse_request(body)
    except ValueError:
        return None
    if not tools or not messages or messages[-1].role != "user":
        return None
    return tool_call_for(tools, users[-1] if users else "", len(users))


def _respond(path: str, route: Callable[..., dict], body: dict, echoed: str = ""
             ) -> tuple[str | None, dict, str, bool]:
    """The stub's answer to `body` POSTed to `path` (served by `route`), as (the 400 error's
    message or None, payload, protocol, whether to stream it); `echoed` ends the reply."""
    gemini = _GEMINI.match(path.split("?")[0])
    model = gemini.group(1) if gemini else str(body.get("model") or "stub")
    users, everything = _user_texts(path, body)
    protocol = PROTOCOLS[route]
    call = _tool_call(protocol, body, users)
    if call is None and (not users or not users[-1]):
        return "the last message must be a non-empty user message", {}, protocol, False
    max_tokens = (body.get("generationConfig") or {}).get("maxOutputTokens") \
        if gemini else body.get("max_tokens")
    text, cut, n_in, n_out = compose_reply(model, users, everything, max_tokens)
    if echoed:
        text += f" (you sent {echoed})"
    streamed = body.get("stream") is True or bool(
        gemini and gemini.group(2) == "streamGenerateContent")
    return None, route(body, model, text, cut, n_in, n_out, call), protocol, streamed


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that hung up
            super().handle_error(request, client_address)


class StubServer:
    """Run the stub on 127.0.0.1 in a background thread: `with StubServer() as s: s.base_url`."""

    def __init__(self, port: int = 0, *, fault_rate: float = 0.0, seed: int = 0,
                 stall_seconds: float = 3.0, api_key: str | None = None, delay: float = 0.0,
                 echo: int = 0, chunk_delay: float = 0.0):
        """`chunk_delay`: seconds between the events of a streamed reply (asked for with
        `stream: true`, or Gemini's streamGenerateContent). `echo` > 0: like a careless API,
        send back the last `echo` characters of every credential the request carried
        (headers, cookie, query, body, Basic auth) in the reply text or 401 message and in
        an `x-echo` header, to test the scrubber."""
        self.fault_rate, self.stall_seconds, self.api_key = fault_rate, stall_seconds, api_key
        self.delay, self.echo, self.chunk_delay = delay, echo, chunk_delay
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.requests: list[dict] = []
        self.seen: list[dict] = []  # every POST as it arrived, refused ones too
        self.faults: dict[str, int] = {}
        self.httpd = _Server(("127.0.0.1", port), self._handler())
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> StubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _pick_fault(self) -> str | None:
        with self.lock:
            if self.fault_rate and self.random.random() < self.fault_rate:
                fault = self.random.choice(FAULTS)
                self.faults[fault] = self.faults.get(fault, 0) + 1
                return fault
        return None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # keep test output quiet
                pass

            def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None):
                headers = dict(headers or {})
                self.send_response(status)
                self.send_header("content-type", headers.pop("content-type", "application/json"))
                self.send_header("content-length", str(len(payload)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            def _send_stream(self, chunks: list[bytes], content_type: str,
                             headers: dict[str, str]) -> None:
                """Chunked transfer, `chunk_delay` before each event, the first too: a
                provider's first token comes after its headers, not in their packet."""
                self.send_response(200)
                self.send_header("content-type", content_type)
                self.send_header("transfer-encoding", "chunked")
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                for chunk in chunks:
                    if server.chunk_delay:
                        time.sleep(server.chunk_delay)
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")

            def _error(self, status: int, message: str, headers: dict[str, str] | None = None):
                body = {"error": {"message": message, "type": "stub_error"}}
                self._send(status, json.dumps(body).encode(), headers)

            def do_GET(self) -> None:
                if self.path in ("/health", "/v1/models"):
                    self._send(200, b'{"status":"ok"}')
                else:
                    self._error(404, f"no route {self.path}")

            def _credentials(self, raw: bytes) -> list[str]:
                sent = [self.headers.get(h, "") for h in (*AUTH_HEADERS, "cookie")]
                sent += [v for k, v in self.headers.items() if "token" in k.lower()]
                auth = self.headers.get("authorization", "")
                if auth.lower().startswith("basic "):
                    with contextlib.suppress(binascii.Error, UnicodeDecodeError):
                        sent.append(base64.b64decode(auth[6:]).decode())
                sent.append(self.path.partition("?")[2])
                with contextlib.suppress(ValueError, AttributeError):
                    sent += [str(v) for k, v in json.loads(raw).items()
                             if "key" in k or "token" in k and k != "max_tokens"]
                return [c for c in sent if c]

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                route = _route(self.path)
                if route is None:
                    return self._error(404, f"no route {self.path}")
                with server.lock:
                    server.seen.append({"path": self.path, "headers": dict(self.headers),
                                        "body": raw.decode("utf-8", "replace")})
                needed = server.api_key is not None or server.echo
                credentials = self._credentials(raw) if needed else []
                echoed = " ".join(c[-server.echo:] for c in credentials) if server.echo else ""
                echo = {"x-echo": echoed} if echoed else {}
                if server.api_key is not None and not any(server.api_key in c
                                                          for c in credentials):
                    return self._error(401, "invalid api key" + (f": {echoed}" if echoed else ""),
                                       echo)
                try:
                    body = json.loads(raw)
                except ValueError:
                    return self._error(400, "request body is not JSON")
                with server.lock:
                    server.requests.append({"path": self.path, "body": body,
                                            "headers": dict(self.headers),
                                            "at": time.monotonic()})
                if server.delay:
                    time.sleep(server.delay)
                fault = server._pick_fault()
                if fault == "429":
                    return self._error(429, "rate limited", {"retry-after": "0.05"})
                if fault == "500":
                    return self._error(500, "internal error")
                if fault == "drop":
                    self.close_connection = True
                    self.connection.close()
                    return None
                if fault == "stall":
                    time.sleep(server.stall_seconds)
                    return None
                if fault == "truncated":  # announces more than it sends, then hangs up
                    self.send_response(200)
                    self.send_header("content-length", "4096")
                    self.end_headers()
                    self.wfile.write(b'{"choices": [{"message": ')
                    self.close_connection = True
                    return None
                if fault == "bad_json":
                    return self._send(200, b'{"choices": [{"message": ')
                error, payload, protocol, streamed = _respond(self.path, route, body, echoed)
                if error is not None:
                    return self._error(400, error)
                # some APIs echo credentials back; the stub does too, to test the scrubber
                if server.api_key:
                    echo["x-echo-key"] = server.api_key
                if streamed:
                    return self._send_stream(stream_chunks(protocol, payload, body),
                                             STREAM_TYPES.get(protocol, "text/event-stream"), echo)
                return self._send(200, json.dumps(payload, ensure_ascii=False).encode("utf-8"), echo)

        return Handler


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def serve(port: int = 8099, fault_rate: float = 0.0, seed: int = 0, delay: float = 0.0,
          chunk_delay: float = 0.0) -> int:
    """Run the stub in the foreground until Ctrl-C or SIGTERM."""
    signal.signal(signal.SIGTERM, _interrupt)
    with StubServer(port, fault_rate=fault_rate, seed=seed, delay=delay,
                    chunk_delay=chunk_delay) as stub:
        print(f"stub server at {stub.base_url} (paths: {', '.join(ROUTES)})", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            stub.thread.join()
    return 0


def answer(path: str, raw: bytes) -> tuple[int, bytes, str]:
    """(status, body, content type) of the stub's fault-free answer to a POST of `raw`."""
    route = _route(path)
    if route is None:
        return 404, json.dumps({"error": {"message": f"no route {path}"}}).encode(), \
            "application/json"
    try:
        body = load_json(raw)  # orjson where it can, json for NaN and big integers
    except ValueError:
        return 400, b'{"error": {"message": "request body is not JSON"}}', "application/json"
    error, payload, protocol, streamed = _respond(path, route, body)
    if error is not None:
        return 400, json.dumps({"error": {"message": error}}).encode(), "application/json"
    if streamed:
        return 200, b"".join(stream_chunks(protocol, payload, body)), \
            STREAM_TYPES.get(protocol, "text/event-stream")
    return 200, json.dumps(payload, ensure_ascii=False).encode("utf-8"), "application/json"


class AsyncStubServer:
    """The stub on asyncio, for load: thousands of keep-alive connections, each answer after
    `latency` seconds (+/- up to `jitter`), and with `rate` at most that many answers a second
    (a sliding one-second window; beyond it 429 with the Retry-After that frees a slot), as a
    provider's rate limit does. Run it in its own process (`serve-stub --asyncio`) to
    measure the client, or in a background thread: `with AsyncStubServer() as s: s.base_url`.
    `keep_bodies=True` keeps every answered request body in `bodies`, for tests to check; off
    by default, as a load run's stub would otherwise grow with every call it answers.
    """

    def __init__(self, port: int = 0, *, latency: float = 0.0, jitter: float = 0.0,
                 rate: float | None = None, seed: int = 0, keep_bodies: bool = False):
        self.requested_port, self.latency, self.jitter, self.rate = port, latency, jitter, rate
        self.keep_bodies = keep_bodies
        self.random = random.Random(seed)
        self.answered = 0  # 200s
        self.refused = 0  # 429s
        self.connections = 0  # opened to it so far
        self.bodies: list[bytes] = []  # with keep_bodies, every answered request body, in order
        self.port = 0
        self._window: collections.deque[float] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _admit(self) -> float | None:
        """None when a request may be answered now, else the seconds until one may."""
        if self.rate is None:
            return None
        now = time.monotonic()
        while self._window and self._window[0] <= now - 1.0:
            self._window.popleft()
        if len(self._window) >= self.rate:
            return self._window[0] + 1.0 - now
        self._window.append(now)
        return None

    def _answer(self, method: str, path: str, raw: bytes) -> tuple[float, bytes]:
        """(seconds to wait, the response's bytes) for one request."""
        extra, delay = "", 0.0
        if method == "GET":
            status, payload, kind = 200, b'{"status":"ok"}', "application/json"
        elif (wait := self._admit()) is not None:
            self.refused += 1
            status, kind = 429, "application/json"
            payload = b'{"error": {"message": "rate limited", "type": "stub_error"}}'
            extra = f"retry-after: {max(wait, 0.001):.3f}\r\n"
        else:
            if self.latency or self.jitter:
                delay = max(0.0, self.latency + self.random.uniform(-self.jitter, self.jitter))
            status, payload, kind = answer(path, raw)
            if status == 200:
                self.answered += 1
                if self.keep_bodies:
                    self.bodies.append(raw)
        return delay, (f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\n"
                       f"content-type: {kind}\r\ncontent-length: {len(payload)}\r\n"
                       f"{extra}\r\n".encode() + payload)

    async def start(self) -> asyncio.Server:
        """Listen on 127.0.0.1 in the running loop."""
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _StubConnection(self), "127.0.0.1",
                                          self.requested_port, backlog=4096)
        self.port = server.sockets[0].getsockname()[1]
        return server

    def __enter__(self) -> AsyncStubServer:
        def run() -> None:
            self._loop = asyncio.new_event_loop()
            server = self._loop.run_until_complete(self.start())
            self._ready.set()
            self._loop.run_forever()
            server.close()
            self._loop.run_until_complete(server.wait_closed())
            self._loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        self._ready.wait()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._thread is not None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()


class _StubConnection(asyncio.Protocol):
    """One keep-alive connection to the asyncio stub: requests answered one at a time, in
    order, each after its latency. A protocol with a timer per answer rather than a task on
    streams: at thousands of calls a second the stub must cost far less than the client it
    stands in front of."""

    def __init__(self, stub: AsyncStubServer):
        self.stub, self.buffer, self.busy = stub, bytearray(), False
        self.transport: asyncio.Transport | None = None
        self.close_after = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.stub.connections += 1

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.busy:
            self._next()

    def _next(self) -> None:
        """Start on the next whole request in the buffer, if there is one."""
        assert self.transport is not None
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        try:
            lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
            method, path = lines[0].split(" ")[:2]
            headers = {k.strip().lower(): v.strip() for k, _, v in
                       (line.partition(":") for line in lines[1:] if line)}
            length = int(headers.get("content-length") or 0)
        except ValueError:
            self.transport.close()
            return
        if len(self.buffer) < end + 4 + length:
            return
        raw = bytes(self.buffer[end + 4:end + 4 + length])
        del self.buffer[:end + 4 + length]
        self.close_after = headers.get("connection", "").lower() == "close"
        self.busy = True
        delay, response = self.stub._answer(method, path, raw)
        if delay:
            asyncio.get_running_loop().call_later(delay, self._send, response)
        else:
            self._send(response)

    def _send(self, response: bytes) -> None:
        assert self.transport is not None
        self.busy = False
        if self.transport.is_closing():
            return
        self.transport.write(response)
        if self.close_after:
            self.transport.close()
        else:
            self._next()


def serve_async(port: int = 8099, latency: float = 0.0, jitter: float = 0.0,
                rate: float | None = None, seed: int = 0) -> int:
    """Run the asyncio stub in the foreground until Ctrl-C or SIGTERM."""
    stub = AsyncStubServer(port, latency=latency, jitter=jitter, rate=rate, seed=seed)

    async def main() -> None:
        server = await stub.start()
        print(f"stub server at {stub.base_url} (asyncio; paths: {', '.join(ROUTES)})",
              flush=True)
        loop = asyncio.get_running_loop()
        stop = loop.create_future()
        loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
        async with server:
            await stop

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
    return 0

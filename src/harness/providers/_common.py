"""Helpers the wire-protocol adapters share: JSON and stream splitting, safe getters, errors."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from http import HTTPStatus
from typing import Any

import orjson

from harness.messages import Reply, Tool, ToolCall, Usage

SNIPPET = 200
MAX_ERROR = 500


def dig(obj: Any, *path: str) -> Any:
    """`obj[a][b]...`, or None as soon as a step is missing or not a dict."""
    for key in path:
        if type(obj) is not dict and not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def to_int(value: Any) -> int | None:
    """A token count as an int (Cohere sends 5.0), or None when it is not a number."""
    if type(value) is int or value is None:
        return value
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def make_usage(input_tokens: Any = None, output_tokens: Any = None, total_tokens: Any = None, *,
               cached_input_tokens: Any = None, cache_write_input_tokens: Any = None,
               reasoning_tokens: Any = None, billed_input_tokens: Any = None,
               billed_output_tokens: Any = None, raw: Any = None) -> Usage:
    """Usage with ints; total is the provider's where it equals input + output, else their sum.

    `raw` is the provider's own usage object, kept as JSON text in `usage_raw`.
    """
    n_in, n_out, total = to_int(input_tokens), to_int(output_tokens), to_int(total_tokens)
    if n_in is not None and n_out is not None:
        total = n_in + n_out
    return Usage(input_tokens=n_in, output_tokens=n_out, total_tokens=total,
                 cached_input_tokens=to_int(cached_input_tokens),
                 cache_write_input_tokens=to_int(cache_write_input_tokens),
                 reasoning_tokens=to_int(reasoning_tokens),
                 billed_input_tokens=to_int(billed_input_tokens),
                 billed_output_tokens=to_int(billed_output_tokens),
                 usage_raw=raw_json(raw))


# a body's fallback: what orjson refuses (an int beyond 64 bits), in the same compact form
_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False)


def encode_body(body: Any) -> bytes:
    """A request body as the bytes sent (and recorded): compact UTF-8 JSON, keys in order.

    Compact like httpx's own `json=` since 0.28; through orjson, ~20x faster than the
    standard library's encoder, which at scale cost a tenth of an offline replay."""
    try:
        return orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return _COMPACT.encode(body).encode("utf-8")


def raw_json(value: Any) -> str | None:
    """A provider's usage object as compact JSON text (None when it sent none)."""
    if value is None or value == {}:
        return None
    try:  # on every replayed turn: orjson is ten times faster and writes the same compact JSON
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def add_counts(*values: Any) -> int | None:
    """The sum of the token counts that are present (None when none is)."""
    counts = [n for n in map(to_int, values) if n is not None]
    return sum(counts) if counts else None


def canonical_finish(raw: Any, mapping: Mapping[str, str], has_tool_calls: bool) -> str:
    """The canonical finish reason; a natural stop that carries tool calls is `tool_calls`."""
    reason = mapping.get(raw, "other") if isinstance(raw, str) else "other"
    return "tool_calls" if has_tool_calls and reason == "stop" else reason


def make_reply(text: str, raw: Any, mapping: Mapping[str, str], tool_calls: list[ToolCall],
               usage: Usage, response_id: Any = None, model: Any = None,
               error: str | None = None) -> Reply:
    """A Reply with the finish reason mapped; an `error` makes it `error` (bar content_filter)."""
    finish = canonical_finish(raw, mapping, bool(tool_calls))
    if error and finish != "content_filter":
        finish = "error"
    return Reply(  # by position: on every turn, and a third faster than by name
        text, finish, raw if isinstance(raw, str) else None, usage, tool_calls,
        str(response_id) if response_id is not None else None,
        model if isinstance(model, str) else None, error,
    )


def arguments_text(arguments: Any) -> str:
    """Tool-call arguments as JSON text, whether sent as text or as an object."""
    if arguments is None:
        return "{}"
    return arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)


def arguments_object(call: ToolCall) -> dict:
    """Tool-call arguments as an object; anything else is kept as {"arguments": <text>}."""
    try:
        value = json.loads(call.arguments or "{}")
    except ValueError:
        return {"arguments": call.arguments}
    return value if isinstance(value, dict) else {"arguments": value}


def passthrough(params: Mapping[str, Any], rename: Mapping[str, str] | None = None,
                drop: Iterable[str] = ()) -> dict[str, Any]:
    """Params for the body: None values and `drop` left out, `model`/`messages` excluded."""
    rename, skip = rename or {}, {"model", "messages", *drop}
    return {rename.get(k, k): v for k, v in params.items() if v is not None and k not in skip}


# --- request bodies ---------------------------------------------------------------------------


def parts_text(content: Any, joiner: str = "\n") -> str:
    """Content as text: a string, or a list of parts (text kept, other parts named in brackets)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Mapping):
        content = [content]
    if not isinstance(content, list):
        return json.dumps(content, ensure_ascii=False)
    out: list[str] = []
    for part in content:
        if isinstance(part, str):
            out.append(part)
            continue
        if not isinstance(part, Mapping):
            out.append(json.dumps(part, ensure_ascii=False))
            continue
        kind = part.get("type", "text")
        if isinstance(part.get("text"), str) and kind in ("text", "input_text", "output_text"):
            out.append(part["text"])
        elif kind == "document":  # Cohere v2 tool results
            document = part.get("document")
            data = document.get("data", document) if isinstance(document, Mapping) else document
            out.append(data if isinstance(data, str) else json.dumps(data, ensure_ascii=False))
        elif kind not in ("thinking", "redacted_thinking", "reasoning"):
            out.append(f"[{kind}]")
    return joiner.join(out)


def object_list(body: Any, key: str = "messages") -> list[Mapping[str, Any]]:
    """`body[key]` as a list of objects, or ValueError naming what is wrong."""
    if not isinstance(body, Mapping):
        raise ValueError("the request body is not a JSON object")
    items = body.get(key)
    if not isinstance(items, list):
        raise ValueError(f"no {key!r} list in the request body")
    for n, item in enumerate(items, 1):
        if not isinstance(item, Mapping):
            raise ValueError(f"{key} item {n} is not an object")
    return items


def request_params(body: Any, skip: Iterable[str], rename: Mapping[str, str] | None = None
                   ) -> dict[str, Any]:
    """A request body's params (what is not messages, tools, model or stream), keys renamed."""
    if not isinstance(body, Mapping):
        return {}
    rename, skip = rename or {}, frozenset(skip)
    return {rename.get(k, k): v for k, v in body.items() if k not in skip and v is not None}


def function_tools(tools: Iterable[Tool]) -> list[dict[str, Any]]:
    """Tools in the OpenAI / Cohere v2 shape: `{"type": "function", "function": {...}}`."""
    return [{"type": "function", "function": {"name": t.name, "description": t.description,
                                              "parameters": t.parameters}} for t in tools]


def read_tools(value: Any) -> tuple[Tool, ...]:
    """Tool schemas from OpenAI-style `{"type": "function", "function": {...}}` items or bare
    `{name, description, parameters}` ones (ShareGPT; also JSON text of either); others skipped."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return ()
    out = []
    for item in value if isinstance(value, list) else []:
        spec = item.get("function", item) if isinstance(item, Mapping) else None
        if isinstance(spec, Mapping) and isinstance(spec.get("name"), str):
            params = spec.get("parameters", spec.get("input_schema"))
            out.append(Tool(name=spec["name"], description=spec.get("description") or "",
                            parameters=dict(params) if isinstance(params, Mapping) else {}))
    return tuple(out)


# --- bodies -------------------------------------------------------------------------------------


def snippet(body: bytes, limit: int = SNIPPET) -> str:
    """The first `limit` characters of a body on one line."""
    return " ".join(body.decode("utf-8", "replace").split())[:limit]


def load_json(body: bytes) -> Any:
    """The body as JSON, or ValueError("invalid JSON response: ...")."""
    try:  # on every replayed turn: orjson is several times faster, and gives the same values
        # (bar integers beyond 64 bits, which no provider sends: it reads them as floats)
        return orjson.loads(body)
    except orjson.JSONDecodeError:  # what only the standard library reads (NaN, big ints)
        pass
    try:
        return json.loads(body)
    except ValueError:
        raise ValueError(f"invalid JSON response: {snippet(body) or 'empty body'}") from None


def is_sse(body: bytes) -> bool:
    """Whether a body is a server-sent event stream (`data:` / `event:` / `:` comment lines)."""
    return body.lstrip().startswith((b"data:", b"event:", b":", b"id:"))


# SSE lines end in CRLF, CR or LF only: str.splitlines() would also split inside JSON strings
# on U+2028/U+2029/U+0085 and friends, which JSON allows unescaped
_SSE_LINES = re.compile(r"\r\n|\r|\n")


def sse_events(body: bytes) -> list[tuple[str | None, Any]]:
    """(event name, parsed data) of each SSE event; `data: [DONE]` is left out."""
    events: list[tuple[str | None, Any]] = []
    name: str | None = None
    data: list[str] = []

    def dispatch() -> None:
        nonlocal name, data
        payload = "\n".join(data).strip()
        if payload and payload != "[DONE]":
            try:
                events.append((name, json.loads(payload)))
            except ValueError:
                detail = f"event data {payload[:SNIPPET]!r}"
                raise ValueError(f"invalid JSON response: {detail}") from None
        name, data = None, []

    for line in _SSE_LINES.split(body.decode("utf-8", "replace")):
        if not line.strip():
            dispatch()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif line.startswith("event:"):
            name = line[6:].strip()
    dispatch()
    if not events:
        raise ValueError(f"invalid JSON response: an event stream without events: {snippet(body)}")
    return events


def ndjson(body: bytes) -> list[Any]:
    """One JSON value per non-empty line (Cohere v1's `application/stream+json`)."""
    try:
        values = [json.loads(line) for line in body.splitlines() if line.strip()]
    except ValueError:
        values = []
    if not values:
        raise ValueError(f"invalid JSON response: {snippet(body) or 'empty body'}")
    return values


# --- errors -------------------------------------------------------------------------------------


def error_detail(data: Any) -> str | None:
    """`kind: message` from an error JSON body (OpenAI, Anthropic, Cohere, FastAPI shapes)."""
    if not isinstance(data, Mapping):
        return None
    err = data.get("error", data)
    if isinstance(err, str):
        return err
    if not isinstance(err, Mapping):
        return None
    message = err.get("message") or err.get("detail")
    if message is None:
        return None
    if not isinstance(message, str):
        message = json.dumps(message, ensure_ascii=False)
    code, kind = err.get("code"), err.get("type")
    label = code if isinstance(code, str) and code else kind if isinstance(kind, str) else None
    if label and label != "error":
        message = f"{label}: {message}"
    raw = dig(err, "metadata", "raw")  # OpenRouter: the upstream provider's own message
    if isinstance(raw, str) and raw:
        message = f"{message} ({raw})"
    return message


def error_text(status: int, body: bytes, data: Any = None) -> str:
    """One line naming the status and the provider's own error message."""
    if data is None:
        try:
            data = json.loads(body)
        except ValueError:
            data = None
    detail = error_detail(data)
    if detail is None:
        detail = snippet(body)
    if not detail:
        try:
            detail = HTTPStatus(status).phrase
        except ValueError:
            detail = "no body"
    return " ".join(f"HTTP {status}: {detail}".split())[:MAX_ERROR]


def error_reply(status: int, body: bytes, data: Any = None) -> Reply:
    """The Reply of a failed request: finish_reason `error` and a one-line message."""
    return Reply(finish_reason="error", error=error_text(status, body, data))


# --- streams, as they arrive --------------------------------------------------------------------

_SSE_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")


class StreamScanner:
    """Complete events of a stream fed in arbitrary byte chunks, each as parsed JSON.

    `ndjson`: one JSON value a line (Cohere v1), else SSE (`data:` lines, a blank line ends an
    event; `[DONE]` and what is not JSON are left out: the adapter's parser judges the body).
    """

    def __init__(self, ndjson: bool = False):
        self.ndjson, self.buffer = ndjson, b""

    def feed(self, chunk: bytes) -> list[Any]:
        """The events that `chunk` completes."""
        self.buffer += chunk
        if self.ndjson:
            *blocks, self.buffer = self.buffer.split(b"\n")
        else:
            *blocks, self.buffer = _SSE_END.split(self.buffer)
        return [e for e in map(self._event, blocks) if e is not None]

    def close(self) -> list[Any]:
        """The last event, when the stream did not end in a separator."""
        rest, self.buffer = self.buffer, b""
        event = self._event(rest)
        return [] if event is None else [event]

    def _event(self, block: bytes) -> Any:
        if self.ndjson:
            payload = block
        else:
            payload = b"\n".join(line[5:].removeprefix(b" ")
                                 for line in block.splitlines() if line.startswith(b"data:"))
        if not payload.strip() or payload.strip() == b"[DONE]":
            return None
        try:
            return orjson.loads(payload)
        except ValueError:
            return None


def sse_bytes(events: Iterable[Any], names: bool = False) -> list[bytes]:
    """Each event as SSE bytes (`event: <type>` first when `names`, as Anthropic sends)."""
    out = []
    for event in events:
        head = f"event: {event['type']}\n".encode() if names else b""
        out.append(head + b"data: " + orjson.dumps(event) + b"\n\n")
    return out


def words(text: str) -> list[str]:
    """`text` cut after each run of spaces: the pieces a stub streams, one per token."""
    return re.findall(r"\S+\s*|\s+", text) or [""]

"""Cohere Chat v1 (`message` + `chat_history` with USER/CHATBOT/SYSTEM/TOOL roles).

The last message is sent as `message` (it must be a user message), leading system messages as
`preamble`, everything between as `chat_history`. Tool calls go back in v1's own shapes:
CHATBOT `tool_calls: [{name, parameters}]` and TOOL `tool_results: [{call, outputs}]`.
Usage: `meta.tokens` -> input/output, `meta.billed_units` -> billed_*, `meta.cached_tokens` ->
cached_input_tokens (no cache writes, no reasoning count); total is input + output (Cohere
sends no total); the usage parts of `meta` (tokens, billed_units, cached_tokens) -> usage_raw.
v1 names no model in its response, so `model` is None. Streams
(`application/stream+json`, one JSON event per line) are read from their final `stream-end`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from harness.messages import (
    AssistantMessage,
    Message,
    Reply,
    SystemMessage,
    Tool,
    ToolCall,
    ToolMessage,
    UserMessage,
)
from harness.providers._common import (
    arguments_object,
    arguments_text,
    dig,
    error_reply,
    make_reply,
    make_usage,
    ndjson,
    passthrough,
    request_params,
    words,
)
from harness.providers.cohere_v2 import FINISH_REASONS

PATH = "/chat"

ROLES = {"user": "USER", "assistant": "CHATBOT", "system": "SYSTEM", "tool": "TOOL"}
# v1 types its flat parameters the Python way; a JSON schema's nesting does not survive
TYPES = {"string": "str", "integer": "int", "number": "float", "boolean": "bool",
         "array": "list", "object": "dict"}
SCHEMA_TYPES = {v: k for k, v in TYPES.items()}


def _history(messages: list[Message]) -> list[dict[str, Any]]:
    calls = {c.id: c for m in messages if m.role == "assistant" for c in m.tool_calls if c.id}
    history: list[dict[str, Any]] = []
    for message in messages:
        if isinstance(message, ToolMessage):
            call = calls.get(message.tool_call_id) or ToolCall(name=message.name or "")
            result = {"call": {"name": call.name, "parameters": arguments_object(call)},
                      "outputs": [{"output": message.content}]}
            if history and history[-1]["role"] == "TOOL":
                history[-1]["tool_results"].append(result)
            else:
                history.append({"role": "TOOL", "tool_results": [result]})
            continue
        entry: dict[str, Any] = {"role": ROLES[message.role], "message": message.content}
        if message.role == "assistant" and message.tool_calls:
            entry["tool_calls"] = [{"name": c.name, "parameters": arguments_object(c)}
                                   for c in message.tool_calls]
        history.append(entry)
    return history


def _tool(tool: Tool) -> dict[str, Any]:
    props = tool.parameters.get("properties") or {}
    required = set(tool.parameters.get("required") or ())
    definitions = {}
    for name, schema in props.items():
        schema = schema if isinstance(schema, Mapping) else {}
        kind = schema.get("type")
        entry: dict[str, Any] = {"type": TYPES.get(kind, kind) if isinstance(kind, str) else "str",
                                 "required": name in required}
        if schema.get("description"):
            entry["description"] = schema["description"]
        definitions[name] = entry
    return {"name": tool.name, "description": tool.description,
            "parameter_definitions": definitions}


def build_request(messages: list[Message], params: Mapping[str, Any],
                  tools: Iterable[Tool] = ()) -> dict:
    """`{"model", "message", "chat_history"?, "preamble"?, "tools"?, **params}`; `stop` ->
    stop_sequences; tools as `parameter_definitions` (top-level parameters only)."""
    if not messages or messages[-1].role != "user":
        last = messages[-1].role if messages else "nothing"
        raise ValueError(f"Cohere v1 needs the last message to be a user message, got {last}")
    lead = 0
    while messages[lead].role == "system":
        lead += 1
    body: dict[str, Any] = {"model": params.get("model"),
                            **passthrough(params, rename={"stop": "stop_sequences"}),
                            "message": messages[-1].content}
    if history := _history(messages[lead:-1]):
        body["chat_history"] = history
    if lead:
        body["preamble"] = "\n\n".join(m.content for m in messages[:lead])
    if tools := [_tool(t) for t in tools]:
        body["tools"] = tools
    return body


def _tool_messages(results: Any) -> list[Message]:
    out: list[Message] = []
    for result in results or []:
        if not isinstance(result, Mapping):
            continue
        outputs = result.get("outputs")
        if (isinstance(outputs, list) and len(outputs) == 1 and isinstance(outputs[0], Mapping)
                and list(outputs[0]) == ["output"] and isinstance(outputs[0]["output"], str)):
            text = outputs[0]["output"]  # what build_request sends
        else:
            text = json.dumps(outputs, ensure_ascii=False)
        out.append(ToolMessage(content=text, name=dig(result, "call", "name") or None))
    return out


def parse_request(body: Any) -> list[Message]:
    """The messages of a v1 request: `preamble` + `chat_history` + `message` (+ tool_results)."""
    if not isinstance(body, Mapping):
        raise ValueError("the request body is not a JSON object")
    if not isinstance(body.get("message"), str) and not body.get("tool_results"):
        raise ValueError("no 'message' string in the request body")
    out: list[Message] = []
    if isinstance(body.get("preamble"), str) and body["preamble"]:
        out.append(SystemMessage(content=body["preamble"]))
    history = body.get("chat_history") or []
    if not isinstance(history, list):
        raise ValueError("'chat_history' is not a list")
    for n, entry in enumerate(history, 1):
        if not isinstance(entry, Mapping):
            raise ValueError(f"chat_history item {n} is not an object")
        role = str(entry.get("role", entry.get("user_name", ""))).upper()
        text = entry.get("message", entry.get("text"))
        text = text if isinstance(text, str) else ""
        if role == "USER":
            out.append(UserMessage(content=text))
        elif role in ("CHATBOT", "ASSISTANT"):
            calls = tuple(ToolCall(name=c.get("name") or "",
                                   arguments=arguments_text(c.get("parameters")))
                          for c in entry.get("tool_calls") or [] if isinstance(c, Mapping))
            out.append(AssistantMessage(content=text, tool_calls=calls))
        elif role == "SYSTEM":
            out.append(SystemMessage(content=text))
        elif role == "TOOL":
            out += _tool_messages(entry.get("tool_results"))
        else:
            raise ValueError(f"chat_history item {n}: unknown role {entry.get('role')!r}")
    out += _tool_messages(body.get("tool_results"))
    if isinstance(body.get("message"), str) and (body["message"] or not body.get("tool_results")):
        out.append(UserMessage(content=body["message"]))
    return out


def parse_params(body: Any) -> dict[str, Any]:
    """The params of a v1 request body, as build_request takes them."""
    return request_params(body, ("model", "message", "chat_history", "preamble", "stream",
                                 "tools", "tool_results", "connectors"),
                          {"stop_sequences": "stop"})


def parse_tools(body: Any) -> tuple[Tool, ...]:
    """The tools of a v1 request, as JSON schemas of their flat `parameter_definitions`."""
    out = []
    for tool in (body.get("tools") if isinstance(body, Mapping) else None) or []:
        if not isinstance(tool, Mapping) or not isinstance(tool.get("name"), str):
            continue
        props, required = {}, []
        for name, spec in (tool.get("parameter_definitions") or {}).items():
            spec = spec if isinstance(spec, Mapping) else {}
            kind = spec.get("type")
            props[name] = {"type": SCHEMA_TYPES.get(kind, kind or "string")}
            if spec.get("description"):
                props[name]["description"] = spec["description"]
            if spec.get("required"):
                required.append(name)
        schema: dict[str, Any] = {"type": "object", "properties": props}
        if required:
            schema["required"] = required
        out.append(Tool(name=tool["name"], description=tool.get("description") or "",
                        parameters=schema))
    return tuple(out)


V1_FINISH = {"stop": "COMPLETE", "length": "MAX_TOKENS", "tool_calls": "COMPLETE",
             "content_filter": "ERROR_TOXIC", "error": "ERROR", "other": "COMPLETE"}


def build_response(reply: Reply, model: str | None = None) -> dict:
    """A v1 chat response body saying what `reply` says (the local bridge answers with it)."""
    tokens = {k: v for k, v in (("input_tokens", reply.usage.input_tokens),
                                ("output_tokens", reply.usage.output_tokens)) if v is not None}
    meta: dict[str, Any] = {"api_version": {"version": "1"}, "tokens": tokens}
    if reply.usage.cached_input_tokens is not None:
        meta["cached_tokens"] = reply.usage.cached_input_tokens
    body: dict[str, Any] = {"response_id": reply.response_id or "", "text": reply.text,
                            "finish_reason": V1_FINISH[reply.finish_reason], "meta": meta}
    if reply.tool_calls:
        body["tool_calls"] = [{"name": c.name, "parameters": arguments_object(c)}
                              for c in reply.tool_calls]
    return body


def _from_response(status: int, body: bytes, data: Any, finish: Any = None) -> Reply:
    if not isinstance(data, Mapping) or not ("text" in data or "finish_reason" in data):
        if isinstance(data, Mapping) and ("message" in data or "error" in data):
            return error_reply(status, body, data)
        raise ValueError(f"invalid JSON response: no 'text' in {str(data)[:200]}")
    tool_calls = [
        ToolCall(name=c.get("name") or "", arguments=json.dumps(c.get("parameters") or {}))
        for c in data.get("tool_calls") or [] if isinstance(c, Mapping)
    ]
    meta = data.get("meta")
    usage = make_usage(
        dig(meta, "tokens", "input_tokens"), dig(meta, "tokens", "output_tokens"),
        billed_input_tokens=dig(meta, "billed_units", "input_tokens"),
        billed_output_tokens=dig(meta, "billed_units", "output_tokens"),
        cached_input_tokens=dig(meta, "cached_tokens"),
        raw={k: meta[k] for k in ("tokens", "billed_units", "cached_tokens") if k in meta}
        if isinstance(meta, Mapping) else None,
    )
    return make_reply(data.get("text") or "", data.get("finish_reason") or finish, FINISH_REASONS,
                      tool_calls, usage, data.get("response_id"), None)


def _from_stream(status: int, body: bytes, events: list[Any]) -> Reply:
    for event in events:
        if dig(event, "event_type") == "stream-end" and isinstance(event.get("response"), Mapping):
            return _from_response(status, body, event["response"], event.get("finish_reason"))
    text = "".join(dig(e, "text") or "" for e in events
                   if dig(e, "event_type") == "text-generation")
    return _from_response(status, body, {"text": text, "finish_reason": None})


def parse_response(status: int, headers: Mapping[str, str], body: bytes) -> Reply:
    """A v1 chat response (JSON or NDJSON stream) as a Reply; HTTP errors become error Replies."""
    if status >= 400:
        return error_reply(status, body)
    try:
        data = json.loads(body)
    except ValueError:
        return _from_stream(status, body, ndjson(body))
    return _from_response(status, body, data)


# --- streams -------------------------------------------------------------------------------------

STREAM_NDJSON = True  # `application/stream+json`: one JSON event a line


def stream_request(body: dict) -> dict:
    """`body` asking for a stream (usage comes in the final stream-end's response)."""
    return {**body, "stream": True}


def token_kind(event: Any) -> str | None:
    """`content` when a stream event carries output (text or a tool call), else None."""
    kind = dig(event, "event_type")
    if kind == "text-generation":
        return "content" if dig(event, "text") else None
    return "content" if kind in ("tool-calls-chunk", "tool-calls-generation") else None


def _event(event: dict[str, Any]) -> bytes:
    return json.dumps(event, ensure_ascii=False).encode() + b"\n"


def stream_start(response_id: str | None) -> list[bytes]:
    """The first NDJSON event of a streamed v1 chat."""
    return [_event({"is_finished": False, "event_type": "stream-start",
                    "generation_id": response_id or ""})]


def stream_text(piece: str) -> list[bytes]:
    """The event carrying one piece of the reply's text."""
    return [_event({"is_finished": False, "event_type": "text-generation", "text": piece})]


def stream_end(reply: Reply, model: str | None = None) -> list[bytes]:
    """The last events: the tool calls (whole) and `stream-end` with the response and usage."""
    body = build_response(reply, model)
    u = reply.usage
    if u.billed_input_tokens is not None or u.billed_output_tokens is not None:
        body["meta"]["billed_units"] = {"input_tokens": u.billed_input_tokens,
                                        "output_tokens": u.billed_output_tokens}
    events = [{"is_finished": False, "event_type": "tool-calls-generation",
               "tool_calls": body["tool_calls"]}] if reply.tool_calls else []
    events.append({"is_finished": True, "event_type": "stream-end",
                   "finish_reason": body["finish_reason"], "response": body})
    return [_event(e) for e in events]


def stream_response(reply: Reply, model: str | None = None) -> list[bytes]:
    """The NDJSON events of a streamed v1 chat saying what `reply` says, a word an event."""
    pieces = [] if reply.tool_calls else words(reply.text)
    return [*stream_start(reply.response_id), *(e for p in pieces for e in stream_text(p)),
            *stream_end(reply, model)]

"""Cohere Chat v1 (`message` + `chat_history` with USER/CHATBOT/SYSTEM/TOOL roles).

The last message is sent as `message` (it must be a user message), leading system messages as
`preamble`, everything between as `chat_history`. Tool calls go back in v1's own shapes:
CHATBOT `tool_calls: [{name, parameters}]` and TOOL `tool_results: [{call, outputs}]`.
Usage: `meta.tokens` -> input/output, `meta.billed_units` -> billed_*; total is input + output
(Cohere sends no total). v1 names no model in its response, so `model` is None. Streams
(`application/stream+json`, one JSON event per line) are read from their final `stream-end`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from harness.messages import Message, Reply, ToolCall, ToolMessage
from harness.providers._common import (
    arguments_object,
    dig,
    error_reply,
    make_reply,
    make_usage,
    ndjson,
    passthrough,
)
from harness.providers.cohere_v2 import FINISH_REASONS

PATH = "/chat"

ROLES = {"user": "USER", "assistant": "CHATBOT", "system": "SYSTEM", "tool": "TOOL"}


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


def build_request(messages: list[Message], params: Mapping[str, Any]) -> dict:
    """`{"model", "message", "chat_history"?, "preamble"?, **params}`; `stop` -> stop_sequences."""
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

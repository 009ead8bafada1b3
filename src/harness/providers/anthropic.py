"""Anthropic Messages.

System messages become the top-level `system` string; tool results are sent as user
`tool_result` blocks, and consecutive same-role messages are merged (Anthropic wants user and
assistant to alternate). `max_tokens` is required (1024 when unset); `seed` is not supported
and left out; `stop` is sent as `stop_sequences`. Usage: input = `input_tokens +
cache_read_input_tokens + cache_creation_input_tokens` (Anthropic's `input_tokens` counts only
the uncached part); `output_tokens` -> output (thinking included); `cache_read_input_tokens`
-> cached_input_tokens; `cache_creation_input_tokens` -> cache_write_input_tokens; total is
input + output (Anthropic sends no total); the `usage` object -> usage_raw. Streams (SSE:
message_start, content_block_*, message_delta) are accumulated.
"""

from __future__ import annotations

import dataclasses
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
    Usage,
    UserMessage,
)
from harness.providers._common import (
    add_counts,
    arguments_object,
    arguments_text,
    dig,
    error_reply,
    error_text,
    is_sse,
    load_json,
    make_reply,
    make_usage,
    object_list,
    parts_text,
    passthrough,
    read_tools,
    request_params,
    sse_bytes,
    sse_events,
    words,
)

PATH = "/messages"
DEFAULT_MAX_TOKENS = 1024

FINISH_REASONS = {
    "end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
    "model_context_window_exceeded": "length", "tool_use": "tool_calls",
    "refusal": "content_filter", "pause_turn": "other",
}


def _blocks(message: Message) -> list[dict[str, Any]]:
    if message.role == "tool":
        block = {"type": "tool_result", "tool_use_id": message.tool_call_id,
                 "content": message.content}
        return [block]
    blocks = [{"type": "text", "text": message.content}] if message.content else []
    if message.role == "assistant":
        blocks += [{"type": "tool_use", "id": c.id, "name": c.name, "input": arguments_object(c)}
                   for c in message.tool_calls]
    return blocks


def _messages(messages: list[Message]) -> list[dict[str, Any]]:
    turns: list[dict[str, Any]] = []
    for message in messages:
        role = "assistant" if message.role == "assistant" else "user"
        blocks = _blocks(message)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += blocks
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:  # a lone text block is sent as plain string content
        if len(turn["content"]) == 1 and turn["content"][0]["type"] == "text":
            turn["content"] = turn["content"][0]["text"]
    return turns


def build_request(messages: list[Message], params: Mapping[str, Any],
                  tools: Iterable[Tool] = ()) -> dict:
    """`{"model", "max_tokens", "system"?, "tools"?, "messages", **params}`."""
    system = "\n\n".join(m.content for m in messages if m.role == "system")
    body: dict[str, Any] = {
        "model": params.get("model"),
        "max_tokens": params.get("max_tokens") or DEFAULT_MAX_TOKENS,
        **passthrough(params, rename={"stop": "stop_sequences"}, drop=("seed", "max_tokens")),
    }
    if system:
        body["system"] = system
    if tools := [{"name": t.name, "description": t.description,
                  "input_schema": t.parameters or {"type": "object"}} for t in tools]:
        body["tools"] = tools
    body["messages"] = _messages([m for m in messages if m.role != "system"])
    return body


def parse_request(body: Any) -> list[Message]:
    """The messages of a request: `system` + `messages` of content blocks (tool_use/tool_result)."""
    items = object_list(body)
    out: list[Message] = []
    if system := parts_text(body.get("system")):
        out.append(SystemMessage(content=system))
    for n, m in enumerate(items, 1):
        role, content = m.get("role"), m.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(blocks, list):
            raise ValueError(f"messages item {n}: content is neither text nor a list of blocks")
        blocks = [b for b in blocks if isinstance(b, Mapping)]
        if role == "user":
            for b in blocks:
                if b.get("type") == "tool_result":
                    out.append(ToolMessage(content=parts_text(b.get("content")),
                                           tool_call_id=b.get("tool_use_id")))
            rest = [b for b in blocks if b.get("type") != "tool_result"]
            if rest or not blocks:
                out.append(UserMessage(content=parts_text(rest)))
        elif role == "assistant":
            calls = tuple(ToolCall(id=b.get("id"), name=b.get("name") or "",
                                   arguments=arguments_text(b.get("input")))
                          for b in blocks if b.get("type") == "tool_use")
            text = parts_text([b for b in blocks if b.get("type") != "tool_use"], "")
            out.append(AssistantMessage(content=text, tool_calls=calls))
        else:
            raise ValueError(f"messages item {n}: unknown role {role!r}")
    return out


def parse_params(body: Any) -> dict[str, Any]:
    """The params of a request body, as build_request takes them."""
    return request_params(body, ("model", "messages", "system", "stream", "tools", "tool_choice"),
                          {"stop_sequences": "stop"})


def parse_tools(body: Any) -> tuple[Tool, ...]:
    """The tool schemas (`tools[].input_schema`) a request body offers."""
    return read_tools(body.get("tools")) if isinstance(body, Mapping) else ()


def _usage(usage: Any) -> Usage:
    read, written = dig(usage, "cache_read_input_tokens"), dig(usage, "cache_creation_input_tokens")
    n_in = dig(usage, "input_tokens")
    return make_usage(add_counts(n_in, read, written) if n_in is not None else None,
                      dig(usage, "output_tokens"), cached_input_tokens=read,
                      cache_write_input_tokens=written,
                      raw=dict(usage) if isinstance(usage, Mapping) else None)


def _from_message(status: int, body: bytes, data: Any) -> Reply:
    if not isinstance(data, Mapping) or not isinstance(data.get("content"), list):
        if isinstance(data, Mapping) and data.get("type") == "error":
            return error_reply(status, body, data)
        raise ValueError(f"invalid JSON response: no 'content' in {str(data)[:200]}")
    blocks = [b for b in data["content"] if isinstance(b, Mapping)]
    text = "".join(b.get("text") or "" for b in blocks if b.get("type") == "text")
    tool_calls = [ToolCall(id=b.get("id"), name=b.get("name") or "",
                           arguments=arguments_text(b.get("input")))
                  for b in blocks if b.get("type") == "tool_use"]
    return make_reply(text, data.get("stop_reason"), FINISH_REASONS, tool_calls,
                      _usage(data.get("usage")), data.get("id"), data.get("model"))


def _from_stream(status: int, body: bytes, events: list[Any]) -> Reply:
    message: dict[str, Any] = {}
    usage: dict[str, Any] = {}
    blocks: dict[int, dict[str, Any]] = {}
    error = None
    for event in events:
        kind = dig(event, "type")
        if kind == "message_start" and isinstance(event.get("message"), Mapping):
            message = dict(event["message"])
            usage.update(message.get("usage") or {})
        elif kind == "content_block_start" and isinstance(event.get("content_block"), Mapping):
            blocks[event.get("index", len(blocks))] = {**event["content_block"], "json": ""}
        elif kind == "content_block_delta" and event.get("index") in blocks:
            block, delta = blocks[event["index"]], event.get("delta") or {}
            block["text"] = (block.get("text") or "") + (delta.get("text") or "")
            block["json"] += delta.get("partial_json") or ""
        elif kind == "message_delta":
            message.update({k: v for k, v in (event.get("delta") or {}).items() if v is not None})
            usage.update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
        elif kind == "error":
            error = error_text(status, body, event)
    content = [{**b, "input": b["json"]} if b["json"] else b for _, b in sorted(blocks.items())]
    reply = _from_message(status, body, {**message, "content": content, "usage": usage})
    return dataclasses.replace(reply, error=error, finish_reason="error") if error else reply


def parse_response(status: int, headers: Mapping[str, str], body: bytes) -> Reply:
    """A Messages response (JSON or SSE stream) as a Reply; HTTP errors become error Replies."""
    if status >= 400:
        return error_reply(status, body)
    if is_sse(body):
        return _from_stream(status, body, [data for _, data in sse_events(body)])
    return _from_message(status, body, load_json(body))


# --- streams -------------------------------------------------------------------------------------

STREAM_NDJSON = False  # SSE


def stream_request(body: dict) -> dict:
    """`body` asking for a stream (usage comes in message_start and message_delta)."""
    return {**body, "stream": True}


def token_kind(event: Any) -> str | None:
    """`content` or `reasoning` when a stream event carries output, else None."""
    if dig(event, "type") != "content_block_delta":
        return None
    kind = dig(event, "delta", "type")
    if kind == "thinking_delta":
        return "reasoning"
    return "content" if kind in ("text_delta", "input_json_delta") else None


STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
                "content_filter": "refusal"}


def stream_response(reply: Reply, model: str | None = None) -> list[bytes]:
    """The SSE events of a streamed message saying what `reply` says, a word a delta."""
    u = reply.usage
    n_in = (u.input_tokens or 0) - (u.cached_input_tokens or 0) - (u.cache_write_input_tokens or 0)
    events: list[dict[str, Any]] = [{"type": "message_start", "message": {
        "id": reply.response_id or "", "type": "message", "role": "assistant",
        "model": reply.model or model or "", "content": [], "stop_reason": None,
        "usage": {"input_tokens": n_in, "output_tokens": 1}}}]
    if reply.tool_calls:
        for i, c in enumerate(reply.tool_calls):
            events += [{"type": "content_block_start", "index": i, "content_block": {
                           "type": "tool_use", "id": c.id, "name": c.name, "input": {}}},
                       {"type": "content_block_delta", "index": i, "delta": {
                           "type": "input_json_delta", "partial_json": c.arguments}},
                       {"type": "content_block_stop", "index": i}]
    else:
        events.append({"type": "content_block_start", "index": 0,
                       "content_block": {"type": "text", "text": ""}})
        events += [{"type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": piece}} for piece in words(reply.text)]
        events.append({"type": "content_block_stop", "index": 0})
    events += [{"type": "message_delta",
                "delta": {"stop_reason": STOP_REASONS.get(reply.finish_reason, "end_turn"),
                          "stop_sequence": None},
                "usage": {"output_tokens": u.output_tokens}},
               {"type": "message_stop"}]
    return sse_bytes(events, names=True)

"""Cohere Chat v2 (`messages` with system/user/assistant/tool roles).

Text is the `text` content items (`thinking` items are left out); when there are none, the
`tool_plan` Cohere writes before tool calls. An assistant message with tool calls is sent back
with its text as `tool_plan`. Usage: `usage.tokens.input_tokens` -> input (Cohere
counts cached tokens in it), `usage.tokens.output_tokens` -> output, `usage.billed_units` ->
billed_*, `usage.cached_tokens` -> cached_input_tokens; Cohere reports no cache writes and no
reasoning count; total is input + output (Cohere sends no total); `usage` -> usage_raw.
Streams (SSE: message-start, content-delta, tool-call-*, message-end) are accumulated.
"""

from __future__ import annotations

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
    arguments_text,
    dig,
    error_reply,
    function_tools,
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

PATH = "/chat"

FINISH_REASONS = {
    "COMPLETE": "stop", "STOP_SEQUENCE": "stop", "MAX_TOKENS": "length",
    "TOOL_CALL": "tool_calls", "ERROR": "error", "ERROR_LIMIT": "error",
    "ERROR_TOXIC": "content_filter",
}


def _message(message: Message) -> dict[str, Any]:
    if message.role == "tool":
        out: dict[str, Any] = {"role": "tool"}
        if message.tool_call_id is not None:
            out["tool_call_id"] = message.tool_call_id
        return {**out, "content": message.content}
    if message.role == "assistant" and message.tool_calls:
        out = {"role": "assistant", "tool_calls": [
            {**({"id": c.id} if c.id is not None else {}), "type": "function",
             "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls
        ]}
        return {**out, "tool_plan": message.content} if message.content else out
    return {"role": message.role, "content": message.content}


def build_request(messages: list[Message], params: Mapping[str, Any],
                  tools: Iterable[Tool] = ()) -> dict:
    """`{"model", "messages", "tools"?, **params}` with `stop` sent as `stop_sequences`."""
    body = {"model": params.get("model"),
            **passthrough(params, rename={"stop": "stop_sequences"}),
            "messages": [_message(m) for m in messages]}
    if tools := function_tools(tools):
        body["tools"] = tools
    return body


def parse_request(body: Any) -> list[Message]:
    """The messages of a v2 request body: like OpenAI's, with `tool_plan` and document results."""
    out: list[Message] = []
    for n, m in enumerate(object_list(body), 1):
        role, content = m.get("role"), m.get("content")
        if role == "system":
            out.append(SystemMessage(content=parts_text(content)))
        elif role == "user":
            out.append(UserMessage(content=parts_text(content)))
        elif role == "assistant":
            text = parts_text(content, "") or m.get("tool_plan") or ""
            calls = tuple(_tool_call(c) for c in m.get("tool_calls") or [] if isinstance(c, Mapping))
            out.append(AssistantMessage(content=text, tool_calls=calls))
        elif role == "tool":
            out.append(ToolMessage(content=parts_text(content), tool_call_id=m.get("tool_call_id")))
        else:
            raise ValueError(f"messages item {n}: unknown role {role!r}")
    return out


def parse_params(body: Any) -> dict[str, Any]:
    """The params of a v2 request body, as build_request takes them."""
    return request_params(body, ("model", "messages", "stream", "tools", "tool_choice"),
                          {"stop_sequences": "stop"})


def parse_tools(body: Any) -> tuple[Tool, ...]:
    """The tool schemas a v2 request body offers."""
    return read_tools(body.get("tools")) if isinstance(body, Mapping) else ()


def _usage(usage: Any) -> Usage:
    return make_usage(
        dig(usage, "tokens", "input_tokens"), dig(usage, "tokens", "output_tokens"),
        billed_input_tokens=dig(usage, "billed_units", "input_tokens"),
        billed_output_tokens=dig(usage, "billed_units", "output_tokens"),
        cached_input_tokens=dig(usage, "cached_tokens"),
        raw=dict(usage) if isinstance(usage, Mapping) else None,
    )


def _tool_call(call: Mapping[str, Any]) -> ToolCall:
    return ToolCall(id=call.get("id"), name=dig(call, "function", "name") or "",
                    arguments=arguments_text(dig(call, "function", "arguments")))


def _error(source: Any) -> str | None:
    message, kind = dig(source, "error"), dig(source, "error_type")
    if not isinstance(message, str):
        return None
    return f"{kind}: {message}" if isinstance(kind, str) else message


V2_FINISH = {"stop": "COMPLETE", "length": "MAX_TOKENS", "tool_calls": "TOOL_CALL",
             "content_filter": "ERROR_TOXIC", "error": "ERROR", "other": "COMPLETE"}


def build_response(reply: Reply, model: str | None = None) -> dict:
    """A v2 chat response body saying what `reply` says (the local bridge answers with it)."""
    message: dict[str, Any] = {"role": "assistant"}
    if reply.tool_calls:
        message.update({k: v for k, v in _message(AssistantMessage(
            content=reply.text, tool_calls=tuple(reply.tool_calls))).items() if k != "role"})
    else:
        message["content"] = [{"type": "text", "text": reply.text}]
    tokens = {k: v for k, v in (("input_tokens", reply.usage.input_tokens),
                                ("output_tokens", reply.usage.output_tokens)) if v is not None}
    usage: dict[str, Any] = {"tokens": tokens}
    if reply.usage.cached_input_tokens is not None:
        usage["cached_tokens"] = reply.usage.cached_input_tokens
    return {"id": reply.response_id or "", "finish_reason": V2_FINISH[reply.finish_reason],
            "message": message, "usage": usage}


def _from_message(status: int, body: bytes, data: Any) -> Reply:
    if not isinstance(data, Mapping) or not isinstance(data.get("message"), Mapping):
        if isinstance(data, Mapping) and ("message" in data or "error" in data):
            return error_reply(status, body, data)
        raise ValueError(f"invalid JSON response: no 'message' in {str(data)[:200]}")
    message = data["message"]
    contents = message.get("content") or []
    text = "".join(c.get("text") or "" for c in contents
                   if isinstance(c, Mapping) and c.get("type") == "text")
    tool_calls = [_tool_call(c) for c in message.get("tool_calls") or [] if isinstance(c, Mapping)]
    return make_reply(text or message.get("tool_plan") or "", data.get("finish_reason"),
                      FINISH_REASONS, tool_calls, _usage(data.get("usage")), data.get("id"),
                      data.get("model"), _error(data))


def _from_stream(events: list[Any]) -> Reply:
    text: list[str] = []
    plan: list[str] = []
    calls: list[dict[str, Any]] = []
    end: Any = {}
    response_id = None
    for event in events:
        kind, message = dig(event, "type"), dig(event, "delta", "message")
        if kind == "message-start":
            response_id = dig(event, "id")
        elif kind == "content-delta":
            text.append(dig(message, "content", "text") or "")
        elif kind == "tool-plan-delta":
            plan.append(dig(message, "tool_plan") or "")
        elif kind == "tool-call-start" and isinstance(dig(message, "tool_calls"), Mapping):
            call = message["tool_calls"]
            calls.append({"id": call.get("id"), "name": dig(call, "function", "name") or "",
                          "arguments": dig(call, "function", "arguments") or ""})
        elif kind == "tool-call-delta" and calls:
            calls[-1]["arguments"] += dig(message, "tool_calls", "function", "arguments") or ""
        elif kind == "message-end":
            end = dig(event, "delta") or {}
    tool_calls = [ToolCall(id=c["id"], name=c["name"], arguments=c["arguments"] or "{}")
                  for c in calls]
    return make_reply("".join(text) or "".join(plan), dig(end, "finish_reason"), FINISH_REASONS,
                      tool_calls, _usage(dig(end, "usage")), response_id, None, _error(end))


def parse_response(status: int, headers: Mapping[str, str], body: bytes) -> Reply:
    """A v2 chat response (JSON or SSE stream) as a Reply; HTTP errors become error Replies."""
    if status >= 400:
        return error_reply(status, body)
    if is_sse(body):
        return _from_stream([data for _, data in sse_events(body)])
    return _from_message(status, body, load_json(body))


# --- streams -------------------------------------------------------------------------------------

STREAM_NDJSON = False  # SSE


def stream_request(body: dict) -> dict:
    """`body` asking for a stream (usage comes in message-end)."""
    return {**body, "stream": True}


def token_kind(event: Any) -> str | None:
    """`content` or `reasoning` (thinking, and the tool plan written before tool calls) when
    a stream event carries output, else None."""
    kind = dig(event, "type")
    if kind == "content-delta":
        content = dig(event, "delta", "message", "content")
        if dig(content, "thinking"):
            return "reasoning"
        return "content" if dig(content, "text") else None
    if kind == "tool-plan-delta":
        return "reasoning"
    return "content" if kind in ("tool-call-start", "tool-call-delta") else None


def stream_start(response_id: str | None, content: bool = True) -> list[bytes]:
    """The first SSE events of a streamed v2 chat: message-start, and content-start when
    text follows as content (not as the plan before tool calls)."""
    events: list[dict[str, Any]] = [{"type": "message-start", "id": response_id or "",
                                     "delta": {"message": {"role": "assistant"}}}]
    if content:
        events.append({"type": "content-start", "index": 0,
                       "delta": {"message": {"content": {"type": "text", "text": ""}}}})
    return sse_bytes(events, names=True)


def stream_text(piece: str, plan: bool = False) -> list[bytes]:
    """The event carrying one piece of text: a content-delta, or a tool-plan-delta."""
    if plan:
        return sse_bytes([{"type": "tool-plan-delta", "delta": {"message": {"tool_plan": piece}}}],
                         names=True)
    return sse_bytes([{"type": "content-delta", "index": 0,
                       "delta": {"message": {"content": {"text": piece}}}}], names=True)


def stream_end(reply: Reply, model: str | None = None, content: bool = True) -> list[bytes]:
    """The last events: content-end (when content was started), the tool calls (whole) and
    message-end with the finish reason and usage."""
    body = build_response(reply, model)
    u = reply.usage
    if u.billed_input_tokens is not None or u.billed_output_tokens is not None:
        body["usage"]["billed_units"] = {"input_tokens": u.billed_input_tokens,
                                         "output_tokens": u.billed_output_tokens}
    events: list[dict[str, Any]] = [{"type": "content-end", "index": 0}] if content else []
    for i, call in enumerate(body["message"].get("tool_calls") or []):
        events += [{"type": "tool-call-start", "index": i,
                    "delta": {"message": {"tool_calls": call}}},
                   {"type": "tool-call-end", "index": i}]
    events.append({"type": "message-end", "delta": {"finish_reason": body["finish_reason"],
                                                    "usage": body["usage"]}})
    return sse_bytes(events, names=True)


def stream_response(reply: Reply, model: str | None = None) -> list[bytes]:
    """The SSE events of a streamed v2 chat saying what `reply` says, a word a delta (the
    text before tool calls as their plan)."""
    plan = bool(reply.tool_calls)
    pieces = words(reply.text) if reply.text or not plan else []
    return [*stream_start(reply.response_id, content=not plan),
            *(e for p in pieces for e in stream_text(p, plan)),
            *stream_end(reply, model, content=not plan)]

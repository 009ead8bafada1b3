"""OpenAI-compatible chat completions: OpenAI, Together, Groq, Mistral, OpenRouter, vLLM, llama.cpp.

Usage (OpenAI's prompt_tokens already count cached and cache-written tokens, and its
completion_tokens the reasoning ones): `prompt_tokens` (AssemblyAI: `input_tokens`) -> input;
`completion_tokens` (AssemblyAI: `output_tokens`) -> output; cache reads from
`prompt_tokens_details.cached_tokens` (Together: top-level `usage.cached_tokens`); cache writes
from `prompt_tokens_details.cache_write_tokens` (OpenRouter) or `usage.cache_creation_input_tokens`
(LiteLLM-style gateways); reasoning from `completion_tokens_details.reasoning_tokens`; total is
`total_tokens` where it equals input + output, else their sum; the `usage` object -> usage_raw.
The response id is `id` (AssemblyAI: `request_id`), the model `model` (AssemblyAI:
`request.model`). Streams (SSE chunks) are accumulated.
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

PATH = "/chat/completions"

FINISH_REASONS = {
    "stop": "stop", "eos": "stop", "end_turn": "stop", "stop_sequence": "stop",
    "length": "length", "max_tokens": "length", "model_length": "length",
    "tool_calls": "tool_calls", "function_call": "tool_calls", "tool_use": "tool_calls",
    "content_filter": "content_filter", "error": "error",
}


def _message(message: Message) -> dict[str, Any]:
    if message.role == "tool":
        out: dict[str, Any] = {"role": "tool"}
        if message.tool_call_id is not None:
            out["tool_call_id"] = message.tool_call_id
        return {**out, "content": message.content}
    if message.role == "assistant" and message.tool_calls:
        return {"role": "assistant", "content": message.content or None, "tool_calls": [
            {**({"id": c.id} if c.id is not None else {}), "type": "function",
             "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls
        ]}
    return {"role": message.role, "content": message.content}


def build_request(messages: list[Message], params: Mapping[str, Any],
                  tools: Iterable[Tool] = ()) -> dict:
    """`{"model", "messages", "tools"?, **params}`; params whose value is None are left out."""
    body = {"model": params.get("model"), **passthrough(params),
            "messages": [_message(m) for m in messages]}
    if tools := function_tools(tools):
        body["tools"] = tools
    return body


def parse_request(body: Any) -> list[Message]:
    """The messages of a request body (system/developer, user, assistant + tool_calls, tool)."""
    out: list[Message] = []
    for n, m in enumerate(object_list(body), 1):
        role, content = m.get("role"), m.get("content")
        if role in ("system", "developer"):
            out.append(SystemMessage(content=parts_text(content)))
        elif role == "user":
            out.append(UserMessage(content=parts_text(content)))
        elif role == "assistant":
            out.append(AssistantMessage(content=parts_text(content, ""),
                                        tool_calls=tuple(_tool_calls(m))))
        elif role in ("tool", "function"):
            name = m.get("name")
            out.append(ToolMessage(content=parts_text(content), tool_call_id=m.get("tool_call_id"),
                                   name=name if isinstance(name, str) else None))
        else:
            raise ValueError(f"messages item {n}: unknown role {role!r}")
    return out


NOT_PARAMS = ("model", "messages", "stream", "stream_options", "tools", "tool_choice",
              "functions", "function_call")


def parse_params(body: Any) -> dict[str, Any]:
    """The params of a request body, as build_request takes them."""
    return request_params(body, NOT_PARAMS)


def parse_tools(body: Any) -> tuple[Tool, ...]:
    """The tool schemas a request body offers (`tools`, or legacy `functions`)."""
    if not isinstance(body, Mapping):
        return ()
    return read_tools(body.get("tools") or body.get("functions"))


def content_text(content: Any) -> str:
    """Message content as text: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text") or "" for p in content
                       if isinstance(p, Mapping) and p.get("type", "text") == "text")
    return ""


def _usage(usage: Any) -> Usage:
    if type(usage) is not dict and not isinstance(usage, Mapping):  # JSON: a dict, seen fast
        return Usage()
    get = usage.get
    n_in = get("prompt_tokens")
    n_out = get("completion_tokens")
    if n_in is None and n_out is None:  # AssemblyAI's LLM Gateway
        n_in, n_out = get("input_tokens"), get("output_tokens")
    prompt = get("prompt_tokens_details") or get("input_tokens_details") or {}
    completion = get("completion_tokens_details") or get("output_tokens_details") or {}
    cached = prompt.get("cached_tokens") if type(prompt) is dict else None
    written = prompt.get("cache_write_tokens") if type(prompt) is dict else None
    return make_usage(
        n_in, n_out, get("total_tokens"),
        cached_input_tokens=cached if cached is not None else get("cached_tokens"),
        cache_write_input_tokens=written if written is not None else get(
            "cache_creation_input_tokens"),
        reasoning_tokens=completion.get("reasoning_tokens") if type(completion) is dict else None,
        raw=usage,
    )


def _tool_calls(message: Mapping[str, Any]) -> list[ToolCall]:
    calls = [
        ToolCall(id=c.get("id"), name=dig(c, "function", "name") or "",
                 arguments=arguments_text(dig(c, "function", "arguments")))
        for c in message.get("tool_calls") or [] if isinstance(c, Mapping)
    ]
    legacy = message.get("function_call")
    if legacy is not None and isinstance(legacy, Mapping):  # None: no slow ABC check per turn
        calls.append(ToolCall(name=legacy.get("name") or "",
                              arguments=arguments_text(legacy.get("arguments"))))
    return calls


def _from_completion(status: int, body: bytes, data: Any) -> Reply:
    if (type(data) is not dict and not isinstance(data, Mapping)
            or not isinstance(data.get("choices"), list)):
        if isinstance(data, Mapping) and data.get("error"):
            return error_reply(status, body, data)
        raise ValueError(f"invalid JSON response: no 'choices' in {str(data)[:200]}")
    choice = data["choices"][0] if data["choices"] else {}
    message = choice.get("message") or {}
    return make_reply(
        content_text(message.get("content")), choice.get("finish_reason"), FINISH_REASONS,
        _tool_calls(message), _usage(data.get("usage")), data.get("id", data.get("request_id")),
        data.get("model") or dig(data, "request", "model"),
    )


def _from_stream(status: int, body: bytes, chunks: list[Any]) -> Reply:
    text: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    raw = usage = response_id = model = error = None
    for chunk in chunks:
        if not isinstance(chunk, Mapping):
            continue
        if chunk.get("error"):
            error = error_reply(status, body, chunk).error
        response_id, model = response_id or chunk.get("id"), chunk.get("model") or model
        usage = chunk.get("usage") or usage
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            text.append(content_text(delta.get("content")))
            for part in delta.get("tool_calls") or []:
                slot = calls.setdefault(part.get("index", len(calls)),
                                        {"id": None, "name": "", "arguments": ""})
                slot["id"] = slot["id"] or part.get("id")
                slot["name"] = slot["name"] or dig(part, "function", "name") or ""
                slot["arguments"] += arguments_text(dig(part, "function", "arguments") or "")
            raw = choice.get("finish_reason") or raw
    tool_calls = [ToolCall(id=c["id"], name=c["name"], arguments=c["arguments"] or "{}")
                  for _, c in sorted(calls.items())]
    return make_reply("".join(text), raw, FINISH_REASONS, tool_calls, _usage(usage),
                      response_id, model, error)


def parse_response(status: int, headers: Mapping[str, str], body: bytes) -> Reply:
    """A chat completion (JSON or SSE stream) as a Reply; HTTP errors become error Replies."""
    if status >= 400:
        return error_reply(status, body)
    if is_sse(body):
        return _from_stream(status, body, [data for _, data in sse_events(body)])
    return _from_completion(status, body, load_json(body))


# --- streams -------------------------------------------------------------------------------------

STREAM_NDJSON = False  # SSE


def stream_request(body: dict) -> dict:
    """`body` asking for a stream whose last chunk carries the usage."""
    return {**body, "stream": True, "stream_options": {"include_usage": True}}


def token_kind(event: Any) -> str | None:
    """`content` or `reasoning` when a stream chunk carries output, else None."""
    for choice in dig(event, "choices") or []:
        delta = dig(choice, "delta") or {}
        if delta.get("content") or delta.get("tool_calls"):
            return "content"
        if delta.get("reasoning_content") or delta.get("reasoning"):
            return "reasoning"
    return None


def chunk_text(event: Any) -> str:
    """The content text one stream chunk adds (its first choice's delta)."""
    for choice in dig(event, "choices") or []:
        if isinstance(choice, Mapping) and choice.get("index", 0) == 0:
            return content_text(dig(choice, "delta", "content"))
    return ""


def stream_response(reply: Reply, model: str | None = None, usage: bool = True) -> list[bytes]:
    """The SSE chunks of a streamed completion saying what `reply` says, a word a chunk."""
    head = {"id": reply.response_id or "", "object": "chat.completion.chunk",
            "created": 1767225600, "model": reply.model or model or ""}
    chunks: list[dict[str, Any]] = []
    if reply.tool_calls:
        chunks.append({**head, "choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": [
            {"index": i, "id": c.id, "type": "function",
             "function": {"name": c.name, "arguments": c.arguments}}
            for i, c in enumerate(reply.tool_calls)]}, "finish_reason": None}]})
    else:
        chunks += [{**head, "choices": [{"index": 0, "delta": {"content": piece},
                                         "finish_reason": None}]} for piece in words(reply.text)]
    finish = {"stop": "stop", "length": "length", "tool_calls": "tool_calls",
              "content_filter": "content_filter"}.get(reply.finish_reason, "stop")
    chunks.append({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    if usage:
        u = reply.usage
        chunks.append({**head, "choices": [], "usage": {
            "prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens,
            "total_tokens": u.total_tokens}})
    return sse_bytes(chunks) + [b"data: [DONE]\n\n"]

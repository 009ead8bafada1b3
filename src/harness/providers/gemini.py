"""Gemini generateContent (`POST /models/{model}:generateContent`, key in `x-goog-api-key`).

System messages become `systemInstruction`; assistant messages role `model`; tool calls
`functionCall` parts and tool results `functionResponse` parts of a user turn (consecutive
results share one turn; a text result is sent as `{"content": text}`). Params go into
`generationConfig` (max_tokens -> maxOutputTokens, temperature, top_p -> topP, top_k -> topK,
stop -> stopSequences, seed, presence/frequency_penalty -> presencePenalty/frequencyPenalty;
any other param as it is); `stream` switches the URL to `streamGenerateContent?alt=sse`. The
model is in the URL, not the body. Tools go out as one `functionDeclarations` list.
Usage: input = `promptTokenCount` (it includes `cachedContentTokenCount`) +
`toolUsePromptTokenCount`; output = `candidatesTokenCount + thoughtsTokenCount`;
`cachedContentTokenCount` -> cached_input_tokens; `thoughtsTokenCount` -> reasoning_tokens;
no cache writes; total is `totalTokenCount` where it equals input + output, else their sum;
`usageMetadata` -> usage_raw. Replies: JSON, a JSON array of chunks, or an SSE stream of them.
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
    sse_bytes,
    sse_events,
    words,
)

PATH = "/models/{model}:generateContent"
STREAM_PATH = "/models/{model}:streamGenerateContent?alt=sse"

FINISH_REASONS = {
    "STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter",
    "RECITATION": "content_filter", "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter", "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter", "MALFORMED_FUNCTION_CALL": "error", "OTHER": "other",
}
CONFIG = {"max_tokens": "maxOutputTokens", "temperature": "temperature", "top_p": "topP",
          "top_k": "topK", "stop": "stopSequences", "seed": "seed",
          "presence_penalty": "presencePenalty", "frequency_penalty": "frequencyPenalty"}
NOT_CONFIG = frozenset({"model", "messages", "stream"})


def _config(params: Mapping[str, Any]) -> dict[str, Any]:
    config = {CONFIG.get(k, k): v for k, v in params.items()
              if v is not None and k not in NOT_CONFIG}
    if isinstance(config.get("stopSequences"), str):
        config["stopSequences"] = [config["stopSequences"]]
    return config


def _response_part(message: ToolMessage, names: Mapping[str, str]) -> dict[str, Any]:
    try:
        value = json.loads(message.content)
    except ValueError:
        value = None
    # a JSON object goes as it is; anything else (and an object that would read back as
    # the wrapper) is wrapped, so that parse_request gives the same text back
    wrapper = isinstance(value, dict) and list(value) == ["content"]
    response = value if isinstance(value, dict) and not wrapper else {"content": message.content}
    name = message.name or names.get(message.tool_call_id or "", "")
    part: dict[str, Any] = {"name": name, "response": response}
    if message.tool_call_id is not None:
        part["id"] = message.tool_call_id
    return {"functionResponse": part}


def _contents(messages: list[Message]) -> list[dict[str, Any]]:
    names = {c.id: c.name for m in messages if m.role == "assistant" for c in m.tool_calls if c.id}
    contents: list[dict[str, Any]] = []
    previous = None
    for message in messages:
        if isinstance(message, ToolMessage):
            part = _response_part(message, names)
            if previous == "tool":
                contents[-1]["parts"].append(part)
            else:
                contents.append({"role": "user", "parts": [part]})
        elif message.role == "assistant":
            parts: list[dict[str, Any]] = [{"text": message.content}] if message.content else []
            parts += [{"functionCall": {**({"id": c.id} if c.id is not None else {}),
                                        "name": c.name, "args": arguments_object(c)}}
                      for c in message.tool_calls]
            contents.append({"role": "model", "parts": parts or [{"text": ""}]})
        else:
            contents.append({"role": "user", "parts": [{"text": message.content}]})
        previous = message.role
    return contents


def build_request(messages: list[Message], params: Mapping[str, Any],
                  tools: Iterable[Tool] = ()) -> dict:
    """`{"systemInstruction"?, "contents", "tools"?, "generationConfig"?}` (model: in the URL)."""
    body: dict[str, Any] = {}
    if system := [m.content for m in messages if m.role == "system"]:
        body["systemInstruction"] = {"parts": [{"text": text} for text in system]}
    body["contents"] = _contents([m for m in messages if m.role != "system"])
    declarations = [{"name": t.name, "description": t.description,
                     **({"parameters": t.parameters} if t.parameters else {})} for t in tools]
    if declarations:
        body["tools"] = [{"functionDeclarations": declarations}]
    if config := _config(params):
        body["generationConfig"] = config
    return body


def _result_text(response: Any) -> str:
    if isinstance(response, Mapping) and list(response) == ["content"] \
            and isinstance(response["content"], str):
        return response["content"]  # what build_request sends for a text result
    return arguments_text(response)


def parse_request(body: Any) -> list[Message]:
    """The messages of a request: `systemInstruction` + `contents` (user/model, parts)."""
    items = object_list(body, "contents")
    out: list[Message] = []
    system = body.get("systemInstruction", body.get("system_instruction"))
    if isinstance(system, Mapping):
        out += [SystemMessage(content=p["text"]) for p in system.get("parts") or []
                if isinstance(p, Mapping) and isinstance(p.get("text"), str)]
    elif isinstance(system, str) and system:
        out.append(SystemMessage(content=system))
    for n, m in enumerate(items, 1):
        role = m.get("role", "user")
        parts = [p for p in m.get("parts") or [] if isinstance(p, Mapping) and not p.get("thought")]
        if role == "model":
            calls = tuple(ToolCall(id=dig(p, "functionCall", "id"),
                                   name=dig(p, "functionCall", "name") or "",
                                   arguments=arguments_text(dig(p, "functionCall", "args")))
                          for p in parts if isinstance(p.get("functionCall"), Mapping))
            text = "".join(p["text"] for p in parts if isinstance(p.get("text"), str))
            out.append(AssistantMessage(content=text, tool_calls=calls))
        elif role in ("user", "function"):
            texts = []
            for p in parts:
                response = p.get("functionResponse")
                if isinstance(response, Mapping):
                    out.append(ToolMessage(content=_result_text(response.get("response")),
                                           tool_call_id=response.get("id"),
                                           name=response.get("name") or None))
                elif isinstance(p.get("text"), str):
                    texts.append(p["text"])
                else:
                    texts.append(parts_text({"type": next(iter(p), "part")}))
            if texts or not parts:
                out.append(UserMessage(content="\n".join(texts)))
        else:
            raise ValueError(f"contents item {n}: unknown role {role!r}")
    return out


PARAMS = {v: k for k, v in CONFIG.items()}


def parse_params(body: Any) -> dict[str, Any]:
    """The params of a request (its `generationConfig`), as build_request takes them."""
    config = dig(body, "generationConfig") or dig(body, "generation_config") or {}
    params = {PARAMS.get(k, k): v for k, v in config.items() if v is not None}
    if isinstance(params.get("stop"), list) and len(params["stop"]) == 1:
        params["stop"] = params["stop"][0]
    return params


def parse_tools(body: Any) -> tuple[Tool, ...]:
    """The function declarations a request body offers."""
    out = []
    for group in (body.get("tools") if isinstance(body, Mapping) else None) or []:
        declarations = dig(group, "functionDeclarations") or dig(group, "function_declarations")
        for d in declarations or []:
            if isinstance(d, Mapping) and isinstance(d.get("name"), str):
                params = d.get("parameters", d.get("parametersJsonSchema"))
                out.append(Tool(name=d["name"], description=d.get("description") or "",
                                parameters=dict(params) if isinstance(params, Mapping) else {}))
    return tuple(out)


def _usage(usage: Any) -> Any:
    prompt = dig(usage, "promptTokenCount")
    candidates, thoughts = dig(usage, "candidatesTokenCount"), dig(usage, "thoughtsTokenCount")
    n_in = add_counts(prompt, dig(usage, "toolUsePromptTokenCount")) if prompt is not None else None
    return make_usage(n_in, add_counts(candidates, thoughts), dig(usage, "totalTokenCount"),
                      cached_input_tokens=dig(usage, "cachedContentTokenCount"),
                      reasoning_tokens=thoughts,
                      raw=dict(usage) if isinstance(usage, Mapping) else None)


GEMINI_FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP",
                 "content_filter": "SAFETY", "error": "OTHER", "other": "OTHER"}


def build_response(reply: Reply, model: str | None = None) -> dict:
    """A generateContent response body saying what `reply` says (the local bridge's answer)."""
    parts: list[dict[str, Any]] = [{"text": reply.text}] if reply.text or not reply.tool_calls else []
    parts += [{"functionCall": {**({"id": c.id} if c.id else {}), "name": c.name,
                                "args": arguments_object(c)}} for c in reply.tool_calls]
    usage = reply.usage
    meta = {k: v for k, v in (("promptTokenCount", usage.input_tokens),
                              ("cachedContentTokenCount", usage.cached_input_tokens),
                              ("candidatesTokenCount", usage.output_tokens),
                              ("totalTokenCount", usage.total_tokens)) if v is not None}
    body: dict[str, Any] = {
        "candidates": [{"content": {"role": "model", "parts": parts},
                        "finishReason": GEMINI_FINISH[reply.finish_reason], "index": 0}],
        "usageMetadata": meta, "modelVersion": reply.model or model or ""}
    if reply.response_id:
        body["responseId"] = reply.response_id
    return body


def _from_chunks(status: int, body: bytes, chunks: list[Any]) -> Reply:
    if not any(isinstance(c, Mapping) and c.keys() & {"candidates", "promptFeedback", "error"}
               for c in chunks):
        raise ValueError(f"invalid JSON response: no 'candidates' in {str(chunks)[:200]}")
    text: list[str] = []
    calls: list[ToolCall] = []
    raw = usage = model = response_id = error = None
    for chunk in chunks:
        if not isinstance(chunk, Mapping):
            continue
        if chunk.get("error"):
            error = error_text(status, body, chunk)
        usage = chunk.get("usageMetadata") or usage
        model = chunk.get("modelVersion") or model
        response_id = chunk.get("responseId") or response_id
        raw = dig(chunk, "promptFeedback", "blockReason") or raw
        candidates = chunk.get("candidates") or [{}]
        candidate = candidates[0] if isinstance(candidates[0], Mapping) else {}
        for part in dig(candidate, "content", "parts") or []:
            if not isinstance(part, Mapping) or part.get("thought"):
                continue
            if isinstance(part.get("text"), str):
                text.append(part["text"])
            if isinstance(part.get("functionCall"), Mapping):
                call = part["functionCall"]
                calls.append(ToolCall(id=call.get("id"), name=call.get("name") or "",
                                      arguments=arguments_text(call.get("args"))))
        raw = candidate.get("finishReason") or raw
    return make_reply("".join(text), raw, FINISH_REASONS, calls, _usage(usage), response_id,
                      model, error)


def parse_response(status: int, headers: Mapping[str, str], body: bytes) -> Reply:
    """A generateContent reply (JSON, JSON array or SSE stream of chunks) as a Reply."""
    if status >= 400:
        return error_reply(status, body)
    if is_sse(body):
        return _from_chunks(status, body, [data for _, data in sse_events(body)])
    data = load_json(body)
    if isinstance(data, Mapping) and "error" in data and "candidates" not in data:
        return error_reply(status, body, data)
    return _from_chunks(status, body, data if isinstance(data, list) else [data])


# --- streams -------------------------------------------------------------------------------------

STREAM_NDJSON = False  # SSE (`alt=sse`)


def stream_request(body: dict) -> dict:
    """The body of a stream is the body of a reply: the stream is asked for by STREAM_PATH."""
    return body


def token_kind(event: Any) -> str | None:
    """`content` or `reasoning` (thought parts) when a stream chunk carries output, else None."""
    candidates = dig(event, "candidates") or [{}]
    kind = None
    for part in dig(candidates[0], "content", "parts") or []:
        if not isinstance(part, Mapping):
            continue
        if part.get("functionCall") or (part.get("text") and not part.get("thought")):
            return "content"
        if part.get("thought") and part.get("text"):
            kind = "reasoning"
    return kind


def _chunk(parts: list[dict[str, Any]], model: str | None, response_id: str | None
           ) -> dict[str, Any]:
    return {"candidates": [{"content": {"role": "model", "parts": parts}, "index": 0}],
            "modelVersion": model or "", **({"responseId": response_id} if response_id else {})}


def stream_text(piece: str, model: str | None = None, response_id: str | None = None
                ) -> list[bytes]:
    """The SSE chunk carrying one piece of the reply's text."""
    return sse_bytes([_chunk([{"text": piece}], model, response_id)])


def stream_end(reply: Reply, model: str | None = None) -> list[bytes]:
    """The last chunks: a chunk a function call (or one empty text part), the last one with
    the finish reason and the usage."""
    body = build_response(reply, model)
    candidate = body["candidates"][0]
    calls = [[p] for p in candidate["content"]["parts"] if "functionCall" in p]
    chunks = [_chunk(parts, body["modelVersion"], body.get("responseId"))
              for parts in calls or [[{"text": ""}]]]
    chunks[-1]["candidates"][0]["finishReason"] = candidate["finishReason"]
    chunks[-1]["usageMetadata"] = body["usageMetadata"]
    return sse_bytes(chunks)


def stream_response(reply: Reply, model: str | None = None) -> list[bytes]:
    """The SSE chunks of streamGenerateContent saying what `reply` says, a word a chunk; the
    last one carries the finish reason and the usage."""
    name = reply.model or model
    pieces = [] if reply.tool_calls else words(reply.text)
    return [*(c for p in pieces for c in stream_text(p, name, reply.response_id)),
            *stream_end(reply, model)]

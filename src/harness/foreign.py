"""Cassettes other tools recorded: inspect them, and import their chat requests as a dataset.

`inspect_cassettes` reads any vcrpy cassette (vcrpy, pytest-recording, pydantic-ai's
`parsed_body` variant; gzip and base64 bodies; SSE and NDJSON streams) into one row per
recorded interaction: where it went, which provider and wire protocol the URL names, and what
the reply was (finish reason, tokens, the start of the text, the error).

`import_cassettes` turns the conversations in recorded chat requests into a harness dataset
(canonical JSONL) plus a baseline results file holding the recorded replies, so recordings
made by other projects become a regression suite. Requests that grow turn by turn (the request
for turn k+1 starts with turn k's messages and an assistant reply) are merged into one
conversation; independent requests become separate conversations.

Nothing here knows a provider's JSON: requests are read by each wire protocol's own
`parse_request` / `parse_tools`, replies by its `parse_response` (see `harness.providers`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pandas as pd
import yaml

from . import results
from .cassettes import LATENCY_HEADER, CassetteError, Interaction, _interaction, read_cassette
from .datasets import Dataset, DatasetError, conversation_turns, from_records, load_dataset
from .messages import (
    AssistantMessage,
    Message,
    Reply,
    ToolMessage,
)
from .providers import protocol_module
from .providers._common import function_tools
from .tools import calls_json

TEXT_CHARS = 60
CASSETTE_SUFFIXES = (".yaml", ".yml", ".json")
COLUMNS: dict[str, str] = {  # inspect_cassettes: column -> dtype
    "file": "string", "index": "Int64", "method": "string", "host": "string", "path": "string",
    "provider": "string", "protocol": "string", "model": "string", "messages": "Int64",
    "streamed": "boolean", "status": "Int64", "finish_reason": "string",
    "raw_finish_reason": "string", "input_tokens": "Int64", "output_tokens": "Int64",
    "total_tokens": "Int64", "cached_tokens": "Int64", "cache_write_tokens": "Int64",
    "reasoning_tokens": "Int64", "billed_input_tokens": "Int64", "billed_output_tokens": "Int64",
    "usage_raw": "string", "text": "string", "tool_calls": "string", "response_model": "string",
    "response_id": "string", "error": "string",
}

# --- where a request went ---------------------------------------------------------------------

HOSTS = {
    "api.openai.com": "openai",
    "api.together.xyz": "together", "api.together.ai": "together",
    "api.groq.com": "groq",
    "api.mistral.ai": "mistral",
    "openrouter.ai": "openrouter",
    "api.cohere.com": "cohere", "api.cohere.ai": "cohere",
    "api.anthropic.com": "anthropic",
    "llm-gateway.assemblyai.com": "assemblyai",
    "generativelanguage.googleapis.com": "gemini",
    "router.huggingface.co": "huggingface",
}
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "0.0.0.0"})
_GEMINI_PATH = re.compile(r"/models/([^/:]+):(?:stream)?[gG]enerateContent$")


def protocol_of_path(path: str) -> str | None:
    """The chat wire protocol a URL path speaks, or None for anything that is not a chat call."""
    path = path.rstrip("/")
    if path.endswith("/chat/completions"):
        return "openai"
    if path.endswith("/v1/messages") or path == "/messages":
        return "anthropic"
    if path.endswith("/v2/chat"):
        return "cohere-v2"
    if path.endswith("/v1/chat"):
        return "cohere-v1"
    if _GEMINI_PATH.search(path):
        return "gemini"
    return None


def detect(uri: str) -> tuple[str, str | None]:
    """(provider, wire protocol) from a recorded URI; protocol None when it is no chat call.

    Known hosts name the provider (Cohere by API version: `cohere-v1` / `cohere-v2`; Together
    also behind the Hugging Face router); 127.0.0.1 / localhost are `local`; any other host is
    its own name. The protocol always comes from the path (fragments and queries ignored).
    """
    parts = urlsplit(uri)
    host, path = (parts.hostname or "").lower(), parts.path
    protocol = protocol_of_path(path)
    provider = "local" if host in LOCAL_HOSTS else HOSTS.get(host, host or "unknown")
    if provider == "cohere" and protocol in ("cohere-v1", "cohere-v2"):
        provider = protocol
    elif provider == "huggingface" and path.startswith("/together/"):
        provider = "together"
    return provider, protocol


# --- through the adapters ---------------------------------------------------------------------


def parse_request(protocol: str, body: Any) -> list[Message]:
    """The messages of a recorded chat request body (parsed JSON) in one wire protocol."""
    return protocol_module(protocol).parse_request(body)


def parse_reply(protocol: str, interaction: Interaction) -> Reply:
    """The recorded response of a chat interaction as a Reply (raises ValueError when unreadable)."""
    failure = interaction.transport_error()
    if failure is not None:  # harness recorded an attempt that got no HTTP answer
        return Reply(finish_reason="error", error=failure)
    headers = {k.lower(): (v[0] if isinstance(v, list) and v else str(v))
               for k, v in interaction.response_headers.items()}
    adapter = protocol_module(protocol)
    return adapter.parse_response(interaction.status, headers, interaction.response_body)


# --- reading files ------------------------------------------------------------------------------


def cassette_files(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    """The files named, folders expanded to the .yaml/.yml/.json files under them (sorted).

    Every file found must be a cassette: reading one that is not raises CassetteError."""
    if isinstance(paths, str | Path):
        paths = [paths]
    out: list[Path] = []
    for item in paths:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file()
                           and p.suffix.lower() in CASSETTE_SUFFIXES)
            if not found:
                raise CassetteError(f"{path}: no cassettes (.yaml, .yml, .json) in this folder")
            out += found
        else:
            out.append(path)
    if not out:
        raise CassetteError("no cassette files given")
    return out


def _interactions(path: Path) -> list[Interaction | str]:
    """Every interaction of a cassette; one that cannot be read is its problem as a string.

    A file that is not a cassette at all raises CassetteError.
    """
    try:
        return list(read_cassette(path))
    except CassetteError as first:
        raw = _raw_list(path)
        if raw is None:
            raise first from None
    out: list[Interaction | str] = []
    for i, item in enumerate(raw):
        try:
            out.append(_interaction(item, f"interaction {i}"))
        except CassetteError as exc:
            out.append(str(exc))
    return out


def _raw_list(path: Path) -> list | None:
    """The raw `interactions` list of a readable version-1 cassette document, else None."""
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError):
        return None
    if isinstance(data, dict) and isinstance(data.get("interactions"), list) \
            and data.get("version", 1) == 1:
        return data["interactions"]
    return None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _streamed(interaction: Interaction, body: Any) -> bool:
    if isinstance(body, Mapping) and body.get("stream") is True:
        return True
    parts = urlsplit(interaction.uri)
    if "alt=sse" in parts.query or parts.path.endswith(":streamGenerateContent"):
        return True
    content_type = (interaction.header("content-type") or "").lower()
    return any(k in content_type for k in ("event-stream", "stream+json", "ndjson"))


# --- inspect ------------------------------------------------------------------------------------


def _inspect_one(file: str, index: int, item: Interaction | str) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row.update(file=file, index=index)
    if isinstance(item, str):
        row["error"] = item
        return row
    parts = urlsplit(item.uri)
    provider, protocol = detect(item.uri)
    body = item.request_json()
    model = body.get("model") if isinstance(body, Mapping) else None
    if protocol == "gemini" and not model and (match := _GEMINI_PATH.search(parts.path)):
        model = match.group(1)
    row.update(method=item.method, host=(parts.hostname or "").lower(), path=parts.path,
               provider=provider, protocol=protocol, model=model if isinstance(model, str) else None,
               streamed=_streamed(item, body), status=item.status)
    if protocol is None:  # not a chat call (GET /v1/models, embeddings, ...): no reply columns
        return row
    problem = None
    try:
        row["messages"] = len(parse_request(protocol, body))
    except (ValueError, TypeError) as exc:
        problem = f"request: {_one_line(exc)}"
    try:
        reply = parse_reply(protocol, item)
    except Exception as exc:  # one odd interaction never stops the table
        row.update(finish_reason="error", error=_one_line(exc))
        return row
    usage = reply.usage
    row.update(
        finish_reason=reply.finish_reason, raw_finish_reason=reply.raw_finish_reason,
        input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
        total_tokens=usage.total_tokens, cached_tokens=usage.cached_input_tokens,
        cache_write_tokens=usage.cache_write_input_tokens, reasoning_tokens=usage.reasoning_tokens,
        billed_input_tokens=usage.billed_input_tokens,
        billed_output_tokens=usage.billed_output_tokens, usage_raw=usage.usage_raw,
        text=reply.text[:TEXT_CHARS], response_model=reply.model, response_id=reply.response_id,
        tool_calls=", ".join(c.name for c in reply.tool_calls) or None,
        error=reply.error or problem,
    )
    return row


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame({column: pd.array([r[column] for r in rows], dtype=dtype)
                         for column, dtype in COLUMNS.items()})


def inspect_cassettes(paths: str | Path | Iterable[str | Path]) -> pd.DataFrame:
    """One row per recorded interaction of any vcrpy cassettes (files or folders of them).

    Columns: file, index, method, host, path, provider, protocol (from the URL), model (the
    request's), messages (how many the request holds), streamed, status, finish_reason,
    raw_finish_reason, input/output/total/cached/cache_write/reasoning/billed tokens (the
    meaning of `harness.messages.Usage`), usage_raw, text (its first 60 characters),
    tool_calls (names), response_model, response_id, error. Interactions that are no chat call keep the
    reply columns empty; one that cannot be read gets its problem in `error`. A file that is
    not a cassette raises CassetteError.
    """
    rows = []
    for path in cassette_files(paths):
        for index, item in enumerate(_interactions(path)):
            rows.append(_inspect_one(str(path), index, item))
    return _frame(rows)


# --- import -------------------------------------------------------------------------------------


@dataclass
class _Exchange:
    """One recorded chat request of a file, its messages and its reply."""

    index: int
    provider: str
    protocol: str
    model: str | None
    messages: list[Message]
    reply: Reply
    status: int
    latency_ms: float | None
    body: Mapping[str, Any]


@dataclass
class ImportPlan:
    """What `import_cassettes` writes: dataset records, baseline rows, and what it left out."""

    records: list[dict[str, Any]] = field(default_factory=list)
    rows: list[results.TurnResult] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def order(self) -> list[str]:
        return [r["id"] for r in self.records]


def _reply_of(protocol: str, item: Interaction) -> Reply:
    try:
        return parse_reply(protocol, item)
    except Exception as exc:  # an unreadable reply is an error row, as in replay
        return Reply(finish_reason="error", error=_one_line(exc))


def _latency(item: Interaction) -> float | None:
    try:
        return float(item.header(LATENCY_HEADER) or "")
    except ValueError:
        return None


def _exchanges(path: Path, plan: ImportPlan) -> list[_Exchange]:
    out = []
    for index, item in enumerate(_interactions(path)):
        where = f"{path}: interaction {index}"
        if isinstance(item, str):
            plan.skipped.append(item if item.startswith(str(path)) else f"{path}: {item}")
            continue
        provider, protocol = detect(item.uri)
        if protocol is None:
            plan.skipped.append(f"{where}: not a chat request ({item.method} {urlsplit(item.uri).path})")
            continue
        body = item.request_json()
        try:
            messages = parse_request(protocol, body)
        except (ValueError, TypeError) as exc:
            plan.skipped.append(f"{where}: cannot read the request: {_one_line(exc)}")
            continue
        if not any(m.role == "user" for m in messages):
            plan.skipped.append(f"{where}: the request holds no user message")
            continue
        model = body.get("model") if isinstance(body.get("model"), str) else None
        if protocol == "gemini" and model is None:
            match = _GEMINI_PATH.search(urlsplit(item.uri).path)
            model = match.group(1) if match else None
        out.append(_Exchange(index, provider, protocol, model, messages, _reply_of(protocol, item),
                             item.status, _latency(item), body))
    return out


def _agrees(reply: Reply, message: Message) -> bool:
    """Whether an assistant message a later request re-sends is this recorded reply."""
    if not isinstance(message, AssistantMessage):
        return False
    if reply.tool_calls or message.tool_calls:
        ids = [c.id for c in reply.tool_calls]
        if all(ids) and ids == [c.id for c in message.tool_calls]:
            return True
        return [(c.name, c.arguments) for c in reply.tool_calls] == [
            (c.name, c.arguments) for c in message.tool_calls]
    return " ".join(reply.text.split()) == " ".join(message.content.split())


def _chains(exchanges: list[_Exchange]) -> list[list[_Exchange]]:
    """Exchanges grouped into conversations: a request that starts with an earlier request's
    messages followed by an assistant message continues it. Among several candidates the one
    whose recorded reply is that assistant message wins, then the longest, then the latest."""
    chains: list[list[_Exchange]] = []
    for ex in exchanges:
        best: tuple[bool, int, int] | None = None
        for k, chain in enumerate(chains):
            last = chain[-1]
            n = len(last.messages)
            if (last.protocol == ex.protocol and len(ex.messages) > n
                    and ex.messages[n].role == "assistant" and ex.messages[:n] == last.messages):
                score = (_agrees(last.reply, ex.messages[n]), n, k)
                best = score if best is None or score > best else best
        if best is None:
            chains.append([ex])
        else:
            chains[best[2]].append(ex)
    return chains


def _reply_message(reply: Reply) -> AssistantMessage | None:
    if reply.finish_reason == "error" or not (reply.text or reply.tool_calls):
        return None
    return AssistantMessage(content=reply.text, tool_calls=tuple(reply.tool_calls))


def _message_record(message: Message) -> dict[str, Any]:
    if isinstance(message, AssistantMessage):
        out: dict[str, Any] = {"role": "assistant", "content": message.content}
        if message.tool_calls:
            out["tool_calls"] = [
                {**({"id": c.id} if c.id else {}), "type": "function",
                 "function": {"name": c.name, "arguments": c.arguments}}
                for c in message.tool_calls]
        return out
    if isinstance(message, ToolMessage):
        out = {"role": "tool", "content": message.content}
        if message.tool_call_id:
            out["tool_call_id"] = message.tool_call_id
        if message.name:
            out["name"] = message.name
        return out
    return {"role": message.role, "content": message.content}


def _fix_tool_ids(messages: list[Message]) -> list[Message]:
    """Tool results keep a tool_call_id only when an earlier assistant call has that id."""
    seen: set[str] = set()
    out: list[Message] = []
    for m in messages:
        if isinstance(m, AssistantMessage):
            seen.update(c.id for c in m.tool_calls if c.id)
        elif isinstance(m, ToolMessage) and m.tool_call_id and m.tool_call_id not in seen:
            m = m.model_copy(update={"tool_call_id": None})
        out.append(m)
    return out


def _metadata(file: str, chain: list[_Exchange], steps: list[dict[str, Any]]) -> dict[str, Any]:
    first = chain[0]
    params = {k: v for k, v in protocol_module(first.protocol).parse_params(first.body).items()
              if not isinstance(v, dict | list)}  # scalars: what a replay can send again
    meta: dict[str, Any] = {
        "source": file, "interactions": [ex.index for ex in chain],
        "provider": first.provider, "protocol": first.protocol, "model": first.model,
    }
    if params:
        meta["params"] = params
    if steps:
        meta["tool_steps"] = steps
    return meta


def plan_import(paths: str | Path | Iterable[str | Path]) -> ImportPlan:
    """The dataset records and baseline rows `import_cassettes` would write (nothing written).

    Each conversation holds its longest request's messages plus the last recorded reply.
    Every recorded reply to a request that ends in a user message becomes one baseline row for
    that user turn (what replaying the imported dataset sends again). Replies to requests that
    end in tool results (tool-loop steps inside a turn) cannot be replayed as a turn of their
    own: they stay in the conversation as its assistant messages and are listed, with their
    finish reason and tokens, in the conversation's `metadata["tool_steps"]`.
    """
    plan = ImportPlan()
    used: set[str] = set()
    for path in cassette_files(paths):
        file = str(path)
        for chain in _chains(_exchanges(path, plan)):
            last = chain[-1]
            messages = list(last.messages)
            if (reply := _reply_message(last.reply)) is not None:
                messages.append(reply)
            base = conv_id = f"{path.stem}-{chain[0].index}"
            n = 1
            while conv_id in used:
                n += 1
                conv_id = f"{base}#{n}"
            steps = []
            for ex in chain:
                if ex.messages[-1].role != "user":
                    usage = ex.reply.usage
                    steps.append({"interaction": ex.index,
                                  "turn": sum(m.role == "user" for m in ex.messages),
                                  "after": ex.messages[-1].role,
                                  "finish_reason": ex.reply.finish_reason,
                                  "raw_finish_reason": ex.reply.raw_finish_reason,
                                  "input_tokens": usage.input_tokens,
                                  "output_tokens": usage.output_tokens,
                                  "http_status": ex.status})
            record = {"id": conv_id,
                      "messages": [_message_record(m) for m in _fix_tool_ids(messages)],
                      "metadata": _metadata(file, chain, steps)}
            tools = protocol_module(last.protocol).parse_tools(chain[0].body)
            if tools:
                record["tools"] = function_tools(tools)
            try:
                (conversation,) = from_records([record], name=path.stem).conversations
            except DatasetError as exc:
                where = ", ".join(str(ex.index) for ex in chain)
                plan.skipped.append(f"{path}: interactions {where}: not a valid conversation: "
                                    f"{_one_line(exc)}")
                continue
            used.add(conv_id)
            plan.records.append(record)
            turns = conversation_turns(conversation)
            for ex in chain:
                if ex.messages[-1].role != "user":
                    continue
                turn = turns[sum(m.role == "user" for m in ex.messages) - 1]
                row = results.TurnResult.from_reply(
                    ex.reply, conversation_id=conv_id, turn=turn.turn, provider=ex.provider,
                    prompt=turn.prompt, reference=turn.reference,
                    reference_tool_calls=calls_json(turn.reference_tool_calls))
                row.model = row.model or ex.model
                row.http_status, row.latency_ms, row.attempts = ex.status, ex.latency_ms, 1
                plan.rows.append(row)
    return plan


def write_dataset(records: list[dict[str, Any]], path: str | Path) -> Path:
    """Dataset records as canonical JSONL (one `{"id", "messages", "metadata"}` per line)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def import_cassettes(
    paths: str | Path | Iterable[str | Path], dataset_out: str | Path,
    baseline_out: str | Path | None = None,
) -> tuple[Dataset, pd.DataFrame]:
    """Recorded chat requests -> a dataset JSONL at `dataset_out` (+ a baseline results file).

    Returns the dataset as `load_dataset` reads it back and the baseline results frame (the
    recorded replies as result rows; see `plan_import` for which replies are rows). Raises
    ValueError when the cassettes hold no chat request to import.
    """
    return write_import(plan_import(paths), dataset_out, baseline_out)


def write_import(plan: ImportPlan, dataset_out: str | Path,
                 baseline_out: str | Path | None = None) -> tuple[Dataset, pd.DataFrame]:
    """Write a planned import: the dataset JSONL and, if asked, the baseline results file."""
    if not plan.records:
        more = f" (and {len(plan.skipped) - 1} more)" if len(plan.skipped) > 1 else ""
        why = f": {plan.skipped[0]}{more}" if plan.skipped else ""
        raise ValueError(f"no chat requests to import{why}")
    if baseline_out is not None:
        check_suffix(baseline_out, "baseline")
    write_dataset(plan.records, dataset_out)
    frame = results.to_frame(plan.rows, order=plan.order)
    if baseline_out is not None:
        results.save(frame, baseline_out)
    return load_dataset(dataset_out), frame


# --- files ---------------------------------------------------------------------------------------


def check_suffix(path: str | Path, what: str) -> None:
    if Path(path).suffix.lower() not in (".parquet", ".csv", ".jsonl", ".json"):
        raise ValueError(f"{path}: unknown {what} format {Path(path).suffix!r} "
                         "(use .parquet, .csv or .jsonl)")


def save_table(frame: pd.DataFrame, path: str | Path) -> Path:
    """Any table as Parquet, CSV or JSONL, chosen by the file extension."""
    check_suffix(path, "table")
    return results.save(frame, path)

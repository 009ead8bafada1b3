"""Conversation datasets: JSONL / JSON files in the common public formats -> Conversations -> turns.

Formats, detected per record (see `load_dataset`): OpenAI / Cohere v2 `messages` (also tau-bench
`traj`), ShareGPT `conversations`, MT-Bench `turns` (+ a FastChat answer file), turn-pair lists
(`history` of `{user, bot}`, `conversation` of `{user, sys}`) and Cohere v1 `chat_history`.
"""

from __future__ import annotations

import array
import contextlib
import functools
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .messages import (
    AssistantMessage,
    Conversation,
    Message,
    SystemMessage,
    Tool,
    ToolCall,
    ToolMessage,
    UserMessage,
)
from .providers._common import read_tools

ROLES: dict[str, str] = {
    "system": "system", "developer": "system",
    "user": "user", "human": "user",
    "assistant": "assistant", "chatbot": "assistant", "bot": "assistant", "model": "assistant",
    "gpt": "assistant", "function_call": "assistant",
    "tool": "tool", "function": "tool", "observation": "tool",
}
ID_KEYS = ("id", "question_id", "conversation_id", "task_id")
EXPECTED = ("messages, traj, conversations, conversation, history, turns (MT-Bench) "
            "or message + chat_history (Cohere v1)")
MESSAGE_COLUMNS = ("conversation_id", "position", "turn", "role", "content", "tool_calls",
                   "tool_call_id")
TURN_COLUMNS = ("conversation_id", "turn", "prompt", "reference", "n_prefix_messages")
_WS = re.compile(r"[ \t\n\r]*")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
TOO_DEEP = "nested too deeply (expected JSON nested less than about 1000 levels)"


class DatasetError(ValueError):
    """Bad dataset input; str() is one line: 'path:line: what is wrong (what was expected)'."""


class _Bad(Exception):
    """A problem inside one record; the loader prefixes where the record is."""


@dataclass(frozen=True)
class Turn:
    """The k-th user message of a conversation, with the dataset's history and reply around it."""

    conversation_id: str
    turn: int
    index: int
    prefix: tuple[Message, ...] = field(repr=False)
    reference: str | None
    tools: tuple[Tool, ...] = field(default=(), repr=False)  # the schemas offered to the model
    reference_tool_calls: tuple[ToolCall, ...] = field(default=(), repr=False)

    @property
    def prompt(self) -> str:
        """The user message text."""
        return self.prefix[-1].content


def conversation_turns(conv: Conversation) -> list[Turn]:
    """One Turn per user message; its reference is the last assistant text before the next one,
    its `reference_tool_calls` those of the assistant message right after it."""
    msgs = conv.messages
    starts = conv.user_turns()
    ends = [*starts[1:], len(msgs)]
    turns = []
    for k, (i, end) in enumerate(zip(starts, ends, strict=True), 1):
        texts = [m.content for m in msgs[i + 1 : end] if m.role == "assistant" and m.content]
        following = msgs[i + 1] if i + 1 < end else None  # a tool call there is the reference
        calls = following.tool_calls if isinstance(following, AssistantMessage) else ()
        turns.append(Turn(conv.id, k, i, tuple(msgs[: i + 1]), texts[-1] if texts else None,
                          conv.tools, calls))
    return turns


@dataclass
class Dataset:
    """Conversations loaded from one file (`name` is its stem, used for cassette folders)."""

    name: str
    path: Path | None
    conversations: list[Conversation]

    def __len__(self) -> int:
        return len(self.conversations)

    def __iter__(self) -> Iterator[Conversation]:
        return iter(self.conversations)

    def __repr__(self) -> str:
        turns = sum(len(c.user_turns()) for c in self.conversations)
        return f"Dataset({self.name!r}, {len(self)} conversations, {turns} user turns)"

    def ids(self) -> list[str]:
        """The conversation ids, in order."""
        return [c.id for c in self.conversations]

    def turn_counts(self) -> Sequence[int]:
        """The number of user turns of each conversation, in order."""
        return [len(c.user_turns()) for c in self.conversations]

    def turns(self) -> list[Turn]:
        """Every user turn of every conversation, in order."""
        return [t for c in self for t in conversation_turns(c)]

    def to_frame(self) -> pd.DataFrame:
        """One row per message (`turn` counts the user messages so far), + scalar metadata."""
        rows = []
        for conv in self:
            extra, turn = _scalar_metadata(conv, MESSAGE_COLUMNS), 0
            for position, m in enumerate(conv.messages):
                turn += m.role == "user"
                calls = getattr(m, "tool_calls", ())
                rows.append({
                    "conversation_id": conv.id, "position": position, "turn": turn,
                    "role": m.role, "content": m.content,
                    "tool_calls": json.dumps([c.model_dump() for c in calls], ensure_ascii=False)
                    if calls else None,
                    "tool_call_id": getattr(m, "tool_call_id", None), **extra,
                })
        return _frame(rows, MESSAGE_COLUMNS, {"position": "Int64", "turn": "Int64", "role": "string",
                                              "content": "string", "tool_calls": "string",
                                              "tool_call_id": "string"})

    def turns_frame(self) -> pd.DataFrame:
        """One row per user turn: prompt, reference, prefix length, + scalar metadata."""
        rows = []
        for conv in self:
            extra = _scalar_metadata(conv, TURN_COLUMNS)
            rows += [{"conversation_id": t.conversation_id, "turn": t.turn, "prompt": t.prompt,
                      "reference": t.reference, "n_prefix_messages": len(t.prefix), **extra}
                     for t in conversation_turns(conv)]
        return _frame(rows, TURN_COLUMNS, {"turn": "Int64", "prompt": "string", "reference": "string",
                                           "n_prefix_messages": "Int64"})


class LazyDataset(Dataset):
    """A Dataset that holds an index of its file (ids and turn counts), not its conversations:
    iterating it reads the file again and builds each conversation as it is taken, so a replay
    of millions of turns never holds them all. `conversations` builds (once) the whole list."""

    def __init__(self, name: str, path: Path, ids: list[str], turn_counts: Sequence[int],
                 build: Callable[[], Iterator[Conversation]]):
        self.name, self.path = name, path
        self._ids, self._turn_counts, self._build = ids, turn_counts, build

    @functools.cached_property
    def conversations(self) -> list[Conversation]:  # type: ignore[override]
        return list(self)

    def __len__(self) -> int:
        return len(self._ids)

    def __iter__(self) -> Iterator[Conversation]:
        if "conversations" in self.__dict__:
            yield from self.conversations
            return
        ids = self._ids
        for k, conv in enumerate(self._build()):
            if k >= len(ids) or conv.id != ids[k]:  # the file was changed since it was indexed
                raise DatasetError(f"{self.path}: changed while being replayed (conversation "
                                   f"{k + 1} is {conv.id!r}, expected "
                                   f"{ids[k] if k < len(ids) else 'none'!r})")
            yield conv

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, {len(self)} conversations, "
                f"{sum(self._turn_counts)} user turns, lazy)")

    def ids(self) -> list[str]:
        return self._ids

    def turn_counts(self) -> Sequence[int]:
        return self._turn_counts


def load_dataset(
    path: str | Path, *, answers: str | Path | None = None, limit: int | None = None,
    tools: str | Path | None = None, lazy: bool = False,
) -> Dataset:
    """Load a JSONL file, JSON array or JSON document of conversations (the first `limit`).

    `answers` is a FastChat answer file joined to MT-Bench questions on `question_id`: its
    turns become the assistant replies after each user turn. `tools` is a JSON array of tool
    schemas (OpenAI `{"type": "function", "function": {...}}` or bare `{name, description,
    parameters}`) offered in every conversation that names none of its own (a record's own
    `tools` list, OpenAI-style or ShareGPT's JSON text, always wins).
    """
    path = Path(path)
    if limit is not None and limit < 1:
        raise DatasetError(f"{path}: limit is {limit} (expected a positive number)")
    joined = _load_answers(Path(answers)) if answers is not None else None
    shared_tools = load_tools(tools) if tools is not None else ()

    def build() -> Iterator[Conversation]:
        for c in _each_conversation(_read_records(path), path.stem, joined, limit):
            yield c if c.tools or not shared_tools else c.model_copy(update={"tools": shared_tools})

    if not lazy:
        return Dataset(path.stem, path, list(build()))
    # A first pass validates every record (a bad line fails here, before any call) and keeps
    # only the index; the conversations are built again, one at a time, as a replay takes them.
    ids: list[str] = []
    counts = array.array("I")
    for c in _each_conversation(_read_records(path), path.stem, joined, limit):
        ids.append(c.id)
        counts.append(sum(m.role == "user" for m in c.messages))
    return LazyDataset(path.stem, path, ids, counts, build)


def load_tools(path: str | Path) -> tuple[Tool, ...]:
    """Tool schemas from a JSON file holding an array of them (see `load_dataset`)."""
    path = Path(path)
    expected = ("expected a JSON array of tool schemas: {type: function, function: {name, "
                "description, parameters}} or {name, description, parameters}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file ({expected})") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DatasetError(f"{path}: not JSON: {' '.join(str(exc).split())} ({expected})") from None
    if not isinstance(data, list) or not data:
        raise DatasetError(f"{path}: {expected}")
    tools = []
    for n, item in enumerate(data, 1):
        found = read_tools([item])
        if not found:
            raise DatasetError(f"{path}: item {n}: not a tool schema ({expected})")
        tools += found
    return tuple(tools)


def from_records(records: Iterable[dict], name: str = "dataset") -> Dataset:
    """A Dataset from in-memory records in any of the file formats (for notebooks)."""
    located = ((f"{name}: record {n}", n, r) for n, r in enumerate(records, 1))
    return Dataset(name, None, _conversations(located, name, None, None))


# -- records -> conversations ------------------------------------------------------------------


def _conversations(
    records: Iterable[tuple[str, int, Any]], stem: str,
    answers: dict[str, list[str]] | None, limit: int | None,
) -> list[Conversation]:
    return list(_each_conversation(records, stem, answers, limit))


def _each_conversation(
    records: Iterable[tuple[str, int, Any]], stem: str,
    answers: dict[str, list[str]] | None, limit: int | None,
) -> Iterator[Conversation]:
    used: set[str] = set()
    for where, number, record in records:
        try:
            if not isinstance(record, dict):
                raise _Bad(f"record is {_kind(record)} (expected a JSON object)")
            items, consumed = _items(record, answers)
            messages = _messages(items)
        except _Bad as exc:
            raise DatasetError(f"{where}: {exc}".replace("\n", " ")) from None
        except RecursionError:
            raise DatasetError(f"{where}: {TOO_DEEP}") from None
        base = _explicit_id(record) or f"{stem}-{number}"
        conv_id, n = base, 1
        while conv_id in used:
            n += 1
            conv_id = f"{base}#{n}"
        used.add(conv_id)
        skip = {*consumed, "id", "conversation_id"}
        metadata = {k: v for k, v in record.items() if k not in skip}
        if isinstance(metadata.get("metadata"), dict):  # canonical {"id", "messages", "metadata"}
            metadata = {**metadata.pop("metadata"), **metadata}
        tools: tuple[Tool, ...] = ()
        if isinstance(metadata.get("tools"), str):  # ShareGPT keeps tool schemas as JSON text
            with contextlib.suppress(json.JSONDecodeError):
                metadata["tools"] = json.loads(metadata["tools"])
        if isinstance(metadata.get("tools"), list) and (
                (tools := read_tools(metadata["tools"])) or not metadata["tools"]):
            del metadata["tools"]  # schemas move to Conversation.tools
        if all(type(key) is str for key in metadata):  # as a JSON file's keys always are
            # its fields are built valid above: validating them again (each message once more)
            # took a quarter of building a conversation
            yield Conversation.model_construct(id=conv_id, messages=messages, metadata=metadata,
                                               tools=tools)
        else:
            yield Conversation(id=conv_id, messages=messages, metadata=metadata, tools=tools)
        if len(used) == limit:
            break


def _items(record: dict, answers: dict[str, list[str]] | None) -> tuple[list[Any], tuple[str, ...]]:
    """The record's messages as raw role dicts, and the record keys they were made from."""
    system = record.get("system")
    lead = [{"role": "system", "content": system}] if isinstance(system, str) and system else []
    used_system = ("system",) if lead else ()
    for key in ("messages", "conversations", "conversation", "history", "traj"):
        value = record.get(key)
        if not isinstance(value, list):
            if key in record and key in ("messages", "conversations"):
                raise _Bad(f"{key} is {_kind(value)} (expected a list of messages)")
            continue
        if value and all(isinstance(p, dict) and "role" not in p and "from" not in p for p in value) \
                and any("user" in p for p in value):
            value = _pairs(value, key)
        elif key == "traj" and not all(isinstance(m, dict) and "role" in m for m in value):
            continue
        return lead + value, (key, *used_system)
    if "turns" in record:
        return _mt_bench(record, answers), ("turns",)
    if "message" in record or "chat_history" in record:
        return _cohere_v1(record), ("preamble", "chat_history", "message")
    keys = _some(list(record), 8)
    hint = ""
    if "choices" in record and "question_id" in record:
        hint = "; this looks like a FastChat answer file: pass it as answers="
    elif record.get("type") == "function" or "parameters" in record:
        hint = "; this looks like a tool schema, not a conversation"
    raise _Bad(f"no recognizable conversation in keys {{{keys}}} (expected {EXPECTED}{hint})")


def _pairs(pairs: list[dict], key: str) -> list[dict]:
    """`[{user, bot|sys|assistant}, ...]` (MT-Bench-101, MT-Eval) -> role dicts."""
    items: list[dict] = []
    for k, pair in enumerate(pairs, 1):
        if "user" not in pair:
            raise _Bad(f"{key} item {k} has no 'user' (expected {{user, bot}} pairs)")
        items.append({"role": "user", "content": pair["user"], "_at": f"{key} item {k} user"})
        reply = next((pair[r] for r in ("bot", "sys", "assistant") if r in pair), None)
        if reply is not None:
            items.append({"role": "assistant", "content": reply, "_at": f"{key} item {k} reply"})
    return items


def _mt_bench(record: dict, answers: dict[str, list[str]] | None) -> list[dict]:
    """MT-Bench `turns` -> user messages, each followed by the joined answer's turn if any."""
    turns = record["turns"]
    if not isinstance(turns, list):
        raise _Bad(f"turns is {_kind(turns)} (expected a list of user prompts)")
    replies = (answers or {}).get(str(record.get("question_id")), [])
    items: list[dict] = []
    for k, prompt in enumerate(turns):
        items.append({"role": "user", "content": prompt, "_at": f"turns item {k + 1}"})
        if k < len(replies):
            items.append({"role": "assistant", "content": replies[k], "_at": f"answer {k + 1}"})
    return items


def _cohere_v1(record: dict) -> list[Any]:
    """Cohere v1 `preamble` + `chat_history` + final `message` -> role dicts."""
    history, message = record.get("chat_history") or [], record.get("message")
    if not isinstance(history, list):
        raise _Bad(f"chat_history is {_kind(history)} (expected a list of messages)")
    if not isinstance(message, str):
        raise _Bad(f"message is {_kind(message)} (expected the final user message as a string)")
    preamble = record.get("preamble")
    lead = [{"role": "system", "content": preamble, "_at": "preamble"}] if preamble else []
    return [*lead, *history, {"role": "user", "content": message, "_at": "message"}]


def _messages(items: list[Any]) -> list[Message]:
    """Validate raw role dicts and build Messages, pairing tool results with tool calls."""
    if not items:
        raise _Bad("empty conversation (expected at least one user message)")
    out: list[Message] = []
    seen: set[str] = set()
    pending: list[str] = []  # ids of the latest assistant's calls not yet answered
    last_call: str | None = None
    for n, item in enumerate(items, 1):
        at = f"message {n}"
        if not isinstance(item, dict):
            raise _Bad(f"{at} is {_kind(item)} (expected an object with a role and content)")
        at = item.get("_at", at)
        raw = item.get("role", item.get("from"))
        if not isinstance(raw, str):
            raise _Bad(f"{at} has no role (expected a 'role' or 'from' string)")
        role = ROLES.get(raw.lower())
        if role is None:
            raise _Bad(f"{at}: unknown role {raw!r} (expected one of: {', '.join(ROLES)})")
        content = item["content"] if "content" in item else next(  # the usual key first
            (item[k] for k in ("value", "message", "tool_results") if k in item), None)
        if role == "system":
            out.append(SystemMessage(content=_text(content, at, role)))
        elif role == "user":
            out.append(UserMessage(content=_text(content, at, role)))
        elif role == "assistant":
            calls = _tool_calls(item, content, raw.lower() == "function_call", at, len(seen))
            text = "" if raw.lower() == "function_call" else _text(content, at, role)
            out.append(AssistantMessage(content=text, tool_calls=calls))
            if calls:
                pending = [c.id for c in calls if c.id]
                seen.update(pending)
                last_call = pending[-1]
        else:
            call_id = item.get("tool_call_id")
            if call_id is None:
                if not seen:
                    raise _Bad(f"{at}: tool result without an earlier assistant tool call "
                               "(expected a tool call before each tool message)")
                call_id = pending.pop(0) if pending else last_call
            elif str(call_id) not in seen:
                raise _Bad(f"{at}: tool_call_id {call_id!r} matches no earlier assistant tool call "
                           f"(expected one of: {_some(sorted(seen)) or 'none made yet'})")
            elif str(call_id) in pending:
                pending.remove(str(call_id))
            name = item.get("name")
            out.append(ToolMessage(content=_text(content, at, role), tool_call_id=str(call_id),
                                   name=name if isinstance(name, str) else None))
    if not any(m.role == "user" for m in out):
        roles = ", ".join(dict.fromkeys(m.role for m in out))
        raise _Bad(f"no user message (found {roles}; expected at least one user turn)")
    return out


def _tool_calls(
    item: dict, content: Any, sharegpt: bool, at: str, made: int
) -> tuple[ToolCall, ...]:
    """An assistant message's tool calls (OpenAI `tool_calls`, legacy `function_call`, ShareGPT)."""
    if sharegpt:
        try:
            raws = [json.loads(content) if isinstance(content, str) else content]
        except json.JSONDecodeError:
            raise _Bad(f"{at}: function_call value is not JSON "
                       "(expected a JSON object with name and arguments)") from None
    elif isinstance(item.get("function_call"), dict):
        raws = [item["function_call"]]
    else:
        raws = item.get("tool_calls") or []
        if not isinstance(raws, list):
            raise _Bad(f"{at}: tool_calls is {_kind(raws)} (expected a list of tool calls)")
    calls = []
    for k, raw in enumerate(raws, 1):
        fn = raw.get("function") if isinstance(raw, dict) else None
        fn = fn if isinstance(fn, dict) else raw
        name = fn.get("name") if isinstance(fn, dict) else None
        if not isinstance(name, str) or not name:
            raise _Bad(f"{at}: tool call {k} has no function name "
                       "(expected {'function': {'name', 'arguments'}} or {'name', 'arguments'})")
        args = fn.get("arguments", fn.get("parameters"))
        args = args if isinstance(args, str) else json.dumps(args or {}, ensure_ascii=False)
        call_id = raw.get("id")
        call_id = str(call_id) if call_id not in (None, "") else f"call_{made + k}"
        calls.append(ToolCall(id=call_id, name=name, arguments=args))
    return tuple(calls)


def _text(value: Any, at: str, role: str) -> str:
    """Message content as text: a string, or a list of text parts joined by newlines."""
    if isinstance(value, str):
        return value
    if value is None and role == "assistant":
        return ""
    if isinstance(value, list) and all(_is_text(p) for p in value):
        return "\n".join(p if isinstance(p, str) else p["text"] for p in value)
    if role == "tool" and value is not None:
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        k, part = next((k, p) for k, p in enumerate(value, 1) if not _is_text(p))
        what = f"of type {part.get('type')!r}" if isinstance(part, dict) else _kind(part)
        raise _Bad(f"{at}: {role} content part {k} is {what} (expected text parts)")
    raise _Bad(f"{at}: {role} content is {_kind(value)} "
               "(expected a string or a list of text parts)")


def _is_text(part: Any) -> bool:
    return isinstance(part, str) or (isinstance(part, dict) and part.get("type", "text") == "text"
                                     and isinstance(part.get("text"), str))


def _some(names: list[str], n: int = 6) -> str:
    return ", ".join(names[:n]) + (", ..." if len(names) > n else "")


def _explicit_id(record: dict) -> str | None:
    for key in ID_KEYS:
        value = record.get(key)
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value).strip():
            return str(value)
    return None


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an object" if isinstance(value, dict) else "a list"


def _scalar_metadata(conv: Conversation, taken: tuple[str, ...]) -> dict[str, Any]:
    return {(f"metadata_{k}" if k in taken else k): v for k, v in conv.metadata.items()
            if v is None or isinstance(v, str | int | float | bool)}


def _frame(rows: list[dict], columns: tuple[str, ...], dtypes: dict[str, str]) -> pd.DataFrame:
    """Rows on the results' dtype set: missing is <NA> (metadata too), never NaN or "None"."""
    extra = list(dict.fromkeys(k for r in rows for k in r if k not in columns))
    frame = pd.DataFrame(rows, columns=list(columns)).astype({"conversation_id": "string", **dtypes})
    for key in extra:  # pd.array infers Int64 / Float64 / boolean / string from the values
        frame[key] = pd.array([r.get(key) for r in rows])
    return frame


# -- files -> records -------------------------------------------------------------------------


def _load_answers(path: Path) -> dict[str, list[str]]:
    """question_id -> answer turns of a FastChat answer file (the last answer of an id wins)."""
    out: dict[str, list[str]] = {}
    for where, _, rec in _read_records(path):
        choices = rec.get("choices") if isinstance(rec, dict) else None
        first = choices[0] if isinstance(choices, list) and choices else None
        turns = first.get("turns") if isinstance(first, dict) else None
        if (not isinstance(rec, dict) or "question_id" not in rec or not isinstance(turns, list)
                or not all(isinstance(t, str) for t in turns)):
            raise DatasetError(f"{where}: not a FastChat answer "
                               "(expected {question_id, choices: [{turns: [str, ...]}]})")
        out[str(rec["question_id"])] = turns
    return out


def _read_records(path: Path) -> Iterator[tuple[str, int, Any]]:
    """(where, number, record) for each record: JSON Lines streamed line by line, else one JSON
    document (an array of records, or objects one after another)."""
    if not path.is_file():
        raise DatasetError(f"{path}: no such file" if not path.exists()
                           else f"{path}: not a file (expected a JSON or JSONL dataset)")
    with path.open("rb") as f:
        lines = enumerate(f, 1)
        offset = 0
        for lineno, raw in lines:
            text = _decode(raw, path, lineno, offset)
            if text.strip():
                break
            offset += len(raw)
        else:
            raise DatasetError(f"{path}: empty file (expected JSON Lines or a JSON array)")
        try:
            first = json.loads(text)
        except RecursionError:
            raise DatasetError(f"{path}:{lineno}: {TOO_DEEP}") from None
        except json.JSONDecodeError:  # not one record per line: parse the whole document
            rest = _decode(f.read(), path, lineno + 1, offset + len(raw))
            yield from _document(text + rest, path, lineno - 1)
            return
        _check_unicode(f"{path}:{lineno}", text, first)
        if isinstance(first, list):
            if not first:
                raise DatasetError(f"{path}:{lineno}: empty JSON array (expected records)")
            yield from ((f"{path}:{lineno}: record {n}", n, r) for n, r in enumerate(first, 1))
        else:
            yield f"{path}:{lineno}", lineno, first
        offset += len(raw)
        for lineno, raw in lines:
            text = _decode(raw, path, lineno, offset)
            offset += len(raw)
            if not text.strip():
                continue
            if isinstance(first, list):
                raise DatasetError(f"{path}:{lineno}: data after the JSON array "
                                   "(expected one array, or one JSON object per line)")
            try:
                record = json.loads(text)
            except RecursionError:
                raise DatasetError(f"{path}:{lineno}: {TOO_DEEP}") from None
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}:{lineno}: invalid JSON at column {exc.colno}: "
                                   f"{exc.msg} (expected one JSON object per line)") from None
            _check_unicode(f"{path}:{lineno}", text, record)
            yield f"{path}:{lineno}", lineno, record


def _check_unicode(where: str, text: str, record: Any) -> None:
    """A DatasetError for a lone surrogate (`"\\ud800"`): valid JSON, but no UTF-8 can carry it.
    Only text with such an escape in it is looked at closely."""
    if _SURROGATE_ESCAPE.search(text):
        try:
            json.dumps(record, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise DatasetError(f"{where}: a lone UTF-16 surrogate {exc.object[exc.start]!r} in a "
                               "string (expected valid Unicode text)") from None


def _decode(raw: bytes, path: Path, lineno: int, offset: int) -> str:
    """UTF-8 text of `raw` (from line `lineno`, byte `offset` of the file), or a DatasetError."""
    try:
        return raw.decode("utf-8-sig" if offset == 0 else "utf-8")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = lineno + before.count(b"\n")
        column = exc.start - before.rfind(b"\n")
        raise DatasetError(f"{path}:{line}: not UTF-8: byte 0x{raw[exc.start]:02x} at column "
                           f"{column} (file offset {offset + exc.start}; expected UTF-8 text)"
                           ) from None


def _document(text: str, path: Path, skipped: int) -> Iterator[tuple[str, int, Any]]:
    """Records of a whole JSON document; `skipped` blank lines came before it."""
    decoder = json.JSONDecoder()

    def fail(pos: int, what: str) -> DatasetError:
        line = text.count("\n", 0, pos) + skipped + 1
        column = pos - text.rfind("\n", 0, pos)
        return DatasetError(f"{path}:{line}: invalid JSON at column {column}: {what}")

    pos = _WS.match(text, 0).end()
    array = text.startswith("[", pos)
    pos = _WS.match(text, pos + array).end()
    line, counted, n = skipped + 1, 0, 0
    while pos < len(text):
        if array and text.startswith("]", pos):
            pos = _WS.match(text, pos + 1).end()
            if pos < len(text):
                raise fail(pos, "data after the JSON array (expected one array)")
            if n == 0:
                raise DatasetError(f"{path}:{line}: empty JSON array (expected records)")
            return
        try:
            record, end = decoder.raw_decode(text, pos)
        except RecursionError:
            raise fail(pos, TOO_DEEP) from None
        except json.JSONDecodeError as exc:
            raise fail(exc.pos, f"{exc.msg} (expected a JSON array or one object per line)"
                       ) from None
        line += text.count("\n", counted, pos)
        counted, n = pos, n + 1
        _check_unicode(f"{path}:{line}: record {n}", text[pos:end], record)
        yield f"{path}:{line}: record {n}", n, record
        pos = _WS.match(text, end).end()
        if array:
            if text.startswith(",", pos):
                pos = _WS.match(text, pos + 1).end()
            elif not text.startswith("]", pos):
                raise fail(pos, f"expected ',' or ']' after record {n}")
    if array:
        raise fail(pos, "the JSON array is not closed (expected ']')")

"""Tool calls compared: does a reply call the same tools, with the same arguments, as the dataset?"""

from __future__ import annotations

import json
from collections.abc import Iterable

from .messages import ToolCall


def canonical_arguments(arguments: str) -> str:
    """Arguments as canonical JSON text (sorted keys, no spaces); text that is no JSON as it is."""
    try:
        value = json.loads(arguments or "{}")
    except ValueError:
        return arguments.strip()
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def calls_json(calls: Iterable[ToolCall]) -> str | None:
    """Tool calls as the JSON text of the `tool_calls` / `reference_tool_calls` columns."""
    if not calls:  # most turns: both columns of every row ask
        return None
    calls = list(calls)
    return json.dumps([c.model_dump() for c in calls], ensure_ascii=False) if calls else None


def _key(calls: Iterable[ToolCall]) -> list[tuple[str, str]]:
    return sorted((c.name, canonical_arguments(c.arguments)) for c in calls)


def tool_call_match(calls: Iterable[ToolCall], reference: Iterable[ToolCall]) -> bool | None:
    """Whether `calls` are the reference calls (names and canonical arguments equal, in any
    order; ids ignored); None when the reference calls no tool."""
    reference = list(reference)
    if not reference:
        return None
    return _key(calls) == _key(reference)


def from_json(text: str | None) -> list[ToolCall]:
    """Tool calls back from a `tool_calls` column cell."""
    if not text:
        return []
    return [ToolCall(**c) for c in json.loads(text)]

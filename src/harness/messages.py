"""The shapes every other module speaks: messages, conversations and normalized replies."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "error", "other"]
FINISH_REASONS: tuple[str, ...] = ("stop", "length", "tool_calls", "content_filter", "error", "other")


class ToolCall(BaseModel):
    """A function call requested by the assistant; `arguments` is the JSON text as sent."""

    id: str | None = None
    name: str
    arguments: str = "{}"


class Tool(BaseModel):
    """A function the model may call: its name, description and JSON-schema parameters."""

    model_config = ConfigDict(frozen=True)

    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=dict)


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SystemMessage(_Base):
    role: Literal["system"] = "system"
    content: str


class UserMessage(_Base):
    role: Literal["user"] = "user"
    content: str


class AssistantMessage(_Base):
    role: Literal["assistant"] = "assistant"
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()


class ToolMessage(_Base):
    role: Literal["tool"] = "tool"
    content: str
    tool_call_id: str | None = None
    name: str | None = None


Message = Annotated[
    SystemMessage | UserMessage | AssistantMessage | ToolMessage, Field(discriminator="role")
]
MESSAGE_ADAPTER: TypeAdapter[Message] = TypeAdapter(Message)


class Conversation(BaseModel):
    """One dialogue of a dataset: an id, its messages in order and free metadata."""

    id: str
    messages: list[Message]
    metadata: dict[str, Any] = Field(default_factory=dict)
    tools: tuple[Tool, ...] = ()

    def user_turns(self) -> list[int]:
        """Indexes into `messages` of each user message (turn k is element k-1)."""
        return [i for i, m in enumerate(self.messages) if m.role == "user"]


# Usage and Reply are plain dataclasses: adapters build them for every replayed turn from
# values they have already normalized, and validating those again took a tenth of a replay.
@dataclass
class Usage:
    """Token counts with one meaning for every provider; None where it reported nothing.

    `input_tokens` is every prompt token processed (uncached + cache reads + cache writes),
    `output_tokens` every generated token (reasoning included); `cached_input_tokens` (cache
    reads), `cache_write_input_tokens` and `reasoning_tokens` are parts of those. `usage_raw`
    is the provider's own usage object as JSON text.
    """

    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    cached_input_tokens: int | None = None
    cache_write_input_tokens: int | None = None
    reasoning_tokens: int | None = None
    billed_input_tokens: int | None = None
    billed_output_tokens: int | None = None
    usage_raw: str | None = None


@dataclass
class Reply:
    """A provider's answer to one request, normalized across wire protocols."""

    text: str = ""
    finish_reason: FinishReason = "other"
    raw_finish_reason: str | None = None
    usage: Usage = field(default_factory=Usage)
    tool_calls: list[ToolCall] = field(default_factory=list)
    response_id: str | None = None
    model: str | None = None
    error: str | None = None

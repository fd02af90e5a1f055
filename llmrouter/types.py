"""OpenAI-shaped response models: ChatCompletion, ChatCompletionChunk and their parts.

Field names and optionality follow openai-python (see ``shared/protocols/openai-chat.md``).
Every model allows extra fields, so engine extras (vLLM's ``reasoning``, llama.cpp's
``timings``) survive, and ``model_dump(exclude_unset=True)`` gives back the JSON the server sent.
The route (which backend served) is a private attribute, never part of the dump.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from llmrouter.route import Route

__all__ = [
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionMessage",
    "ChatCompletionMessageToolCall",
    "Choice",
    "ChoiceDelta",
    "ChoiceDeltaToolCall",
    "ChoiceDeltaToolCallFunction",
    "ChoiceLogprobs",
    "ChunkChoice",
    "CompletionUsage",
    "Function",
    "Model",
    "ModelList",
]

FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]


class _Base(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())


class Function(_Base):
    """A complete function call: ``arguments`` is JSON text, as OpenAI sends it."""

    name: str
    arguments: str


class ChatCompletionMessageToolCall(_Base):
    """One tool call in a complete assistant message."""

    id: str
    type: Literal["function"] = "function"
    function: Function


class ChatCompletionMessage(_Base):
    """The assistant message of a non-streamed choice."""

    role: Literal["assistant"] = "assistant"
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[ChatCompletionMessageToolCall] | None = None

    @property
    def parsed(self) -> Any:
        """``parse()``: the content validated as the requested model (not part of the JSON)."""
        return self.__dict__.get("_llmrouter_parsed")

    @parsed.setter
    def parsed(self, value: Any) -> None:
        object.__setattr__(self, "_llmrouter_parsed", value)


class ChoiceLogprobs(_Base):
    """Per-token log probabilities of a choice."""

    content: list[dict[str, Any]] | None = None
    refusal: list[dict[str, Any]] | None = None


class Choice(_Base):
    """One choice of a ChatCompletion."""

    index: int = 0
    message: ChatCompletionMessage
    finish_reason: str | None = None
    logprobs: ChoiceLogprobs | None = None


class CompletionUsage(_Base):
    """Token counts of a request."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: dict[str, Any] | None = None
    completion_tokens_details: dict[str, Any] | None = None


class _Routed(_Base):
    # The route lives in the instance __dict__ under a name that is not a field: the
    # serializer never sees it, and no pydantic private attribute has to be initialised for
    # every response (that machinery cost ~100 us per response, see bench/overhead.py).

    @property
    def route(self) -> Route:
        """Which backend served this, and every attempt made (not part of the JSON)."""
        route = self.__dict__.get("_llmrouter_route")
        if route is None:
            route = Route()
            object.__setattr__(self, "_llmrouter_route", route)
        return route

    @route.setter
    def route(self, route: Route) -> None:
        object.__setattr__(self, "_llmrouter_route", route)


class ChatCompletion(_Routed):
    """A complete chat response, as ``POST /v1/chat/completions`` returns it."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: CompletionUsage | None = None
    system_fingerprint: str | None = None
    service_tier: str | None = None


class ChoiceDeltaToolCallFunction(_Base):
    """A fragment of a streamed function call."""

    name: str | None = None
    arguments: str | None = None


class ChoiceDeltaToolCall(_Base):
    """A fragment of a streamed tool call; fragments with the same ``index`` belong together."""

    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: ChoiceDeltaToolCallFunction | None = None


class ChoiceDelta(_Base):
    """What one chunk adds to a choice."""

    role: str | None = None
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[ChoiceDeltaToolCall] | None = None


class ChunkChoice(_Base):
    """One choice of a ChatCompletionChunk."""

    index: int = 0
    delta: ChoiceDelta
    finish_reason: str | None = None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionChunk(_Base):
    """One server-sent event of a streamed chat response."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: CompletionUsage | None = None
    system_fingerprint: str | None = None
    service_tier: str | None = None


class Model(_Base):
    """One entry of ``GET /v1/models``."""

    id: str
    object: str = "model"
    created: int = 0
    owned_by: str = ""


class ModelList(_Routed):
    """The answer of ``GET /v1/models``."""

    object: str = "list"
    data: list[Model]

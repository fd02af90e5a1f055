"""OpenAI-shaped response models: ChatCompletion, ChatCompletionChunk and their parts.

Field names and optionality follow openai-python (see ``shared/protocols/openai-chat.md``).
Every model allows extra fields, so engine extras (vLLM's ``reasoning``, llama.cpp's
``timings``) survive, and ``model_dump(exclude_unset=True)`` gives back the JSON the server sent.
The route (which backend served) is a private attribute, never part of the dump.

``to_dict()`` and ``to_json()`` are the openai SDK's (``openai._models.BaseModel``): by alias,
unset fields left out, ``to_json`` indented by 2; ``model_dump_json()`` is pydantic's, as in the
SDK.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
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
    "exchange_of",
    "set_exchange",
    "stream_chunk",
]

FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]


class _Base(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())

    def to_dict(
        self,
        *,
        mode: Literal["json", "python"] = "python",
        use_api_names: bool = True,
        exclude_unset: bool = True,
        exclude_defaults: bool = False,
        exclude_none: bool = False,
        warnings: bool = True,
    ) -> dict[str, Any]:
        """A dict of this model, as the openai SDK's ``to_dict``: the fields the server sent
        (``exclude_unset``), by their API names."""
        return self.model_dump(
            mode=mode,
            by_alias=use_api_names,
            exclude_unset=exclude_unset,
            exclude_defaults=exclude_defaults,
            exclude_none=exclude_none,
            warnings=warnings,
        )

    def to_json(
        self,
        *,
        indent: int | None = 2,
        use_api_names: bool = True,
        exclude_unset: bool = True,
        exclude_defaults: bool = False,
        exclude_none: bool = False,
        warnings: bool = True,
    ) -> str:
        """JSON text of this model, as the openai SDK's ``to_json`` (indented by 2)."""
        return self.model_dump_json(
            indent=indent,
            by_alias=use_api_names,
            exclude_unset=exclude_unset,
            exclude_defaults=exclude_defaults,
            exclude_none=exclude_none,
            warnings=warnings,
        )


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

    @property
    def request_id(self) -> str | None:
        """The ``x-request-id`` header of the attempt that served this, as the openai SDK's
        ``_request_id`` (``None`` when the server sent none, or for an in-process backend)."""
        exchange = self.__dict__.get("_llmrouter_http")
        if exchange is None:
            return None
        for name, value in exchange[1].items():
            if name.lower() == "x-request-id":
                return str(value)
        return None

    @property
    def _request_id(self) -> str | None:
        """The openai SDK's name for :attr:`request_id`."""
        return self.request_id


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

    def __iter__(self) -> Iterator[Model]:  # type: ignore[override]
        """The models, as iterating the openai SDK's ``SyncPage`` gives them (not pydantic's
        ``(field, value)`` pairs)."""
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


def set_exchange(response: _Base, status: int, headers: Mapping[str, str], body: bytes) -> None:
    """Record the HTTP status, headers and raw body of the attempt that served ``response``
    (not part of the JSON; read by ``with_raw_response``)."""
    object.__setattr__(response, "_llmrouter_http", (status, dict(headers), body))


def exchange_of(response: _Base) -> tuple[int, dict[str, str], bytes] | None:
    """What :func:`set_exchange` recorded, or ``None`` (an in-process backend: no HTTP)."""
    value: tuple[int, dict[str, str], bytes] | None = response.__dict__.get("_llmrouter_http")
    return value


def stream_chunk(
    chunk_id: str,
    created: int,
    model: str,
    delta: dict[str, Any],
    finish: str | None = None,
    usage: Any = None,
    extra: dict[str, Any] | None = None,
) -> ChatCompletionChunk:
    """One OpenAI ``chat.completion.chunk`` with a single choice, as the codecs that translate a
    vendor's stream (Anthropic, Bedrock, Gemini) emit it; ``extra`` adds fields to the choice."""
    choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
    if extra:
        choice.update(extra)
    chunk: dict[str, Any] = {
        "id": chunk_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [choice],
    }
    if usage is not None:
        chunk["usage"] = usage
    return ChatCompletionChunk.model_validate(chunk)

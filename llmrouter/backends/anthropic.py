"""Codec for the Anthropic Messages API (``anthropic://``): ``POST /v1/messages``.

Translates an OpenAI-shaped :class:`ChatRequest` into a Messages API body, and Anthropic's
answers, SSE events and error objects back into the OpenAI shapes. Sans-IO, like every codec.
Protocol facts: ``shared/protocols/anthropic.md``; what maps to what, for users:
``docs/backends/anthropic.md``.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import pydantic
import pydantic_core

from llmrouter._http import HTTPRequest
from llmrouter._request import ChatRequest
from llmrouter._status import error_from_status
from llmrouter.backends import Capabilities, openai_compat
from llmrouter.backends._stream import SSEChunkDecoder
from llmrouter.backends.declaration import BackendDeclaration
from llmrouter.config import BackendSpec
from llmrouter.errors import (
    InvalidRequestError,
    ProtocolError,
    StatusError,
)
from llmrouter.types import ChatCompletion, ChatCompletionChunk, Model, ModelList, stream_chunk

__all__ = [
    "ANTHROPIC_VERSION",
    "CAPABILITIES",
    "DEFAULT_MAX_TOKENS",
    "JSON_TOOL_PREFIX",
    "ChunkDecoder",
    "build_chat",
    "build_health",
    "build_models",
    "map_error",
    "parse_chat",
    "parse_models",
]

# The Messages API requires ``model``: with no model known the driver says so before sending
# (``AsyncHTTPBackend._model``).
MODEL_REQUIRED = True

CAPABILITIES = Capabilities(
    tools=True,
    tool_choice=True,
    json_object=False,  # no JSON mode; json_schema goes through a forced tool instead
    json_schema=True,
    stream_usage=True,  # always: message_start and message_delta carry usage
    seed=False,
    n=False,
    logprobs=False,
    stop=True,
)

ANTHROPIC_VERSION = "2023-06-01"  # the value anthropic-sdk-python sends (anthropic.md 1)

# max_tokens is required by the Messages API; OpenAI callers often leave it out.
DEFAULT_MAX_TOKENS = 4096

# response_format json_schema becomes a forced tool whose name starts with this prefix; the
# answer is that tool's input. The prefix lets parse_chat and ChunkDecoder, which see only the
# response, return the input as message content instead of as a tool call.
JSON_TOOL_PREFIX = "json_response__"

_STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "stop",
}

# Error type -> HTTP status (anthropic.md 4), for error events inside a 200 stream or body.
_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}

_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_DATA_URI = re.compile(r"data:([\w.+-]+/[\w.+-]+);base64,(.*)", re.DOTALL)
_TOOL_NAME_CHARS = re.compile(r"[^a-zA-Z0-9_-]")

# OpenAI fields with no Anthropic counterpart that would change the answer: refused, never
# silently dropped. The value is the hint in the error message.
_UNSUPPORTED = {
    "seed": "the Messages API has no seed",
    "logit_bias": "the Messages API has no logit_bias",
    "audio": "audio output is not available",
    "prediction": "predicted outputs are not available",
    "web_search_options": "use Anthropic's web search tool through extra_body",
    "functions": "use tools",
    "function_call": "use tool_choice",
    "reasoning_effort": 'use extra_body={"thinking": {...}} for extended thinking',
    "verbosity": "the Messages API has no verbosity setting",
}
# Bookkeeping fields of OpenAI's platform, with no effect on the answer: not sent. (Usage is
# always streamed, so stream_options.include_usage needs nothing.)
_IGNORED = frozenset({"store", "metadata", "prompt_cache_key", "stream_options"})
_TRANSLATED = frozenset(
    {
        "frequency_penalty", "logprobs", "max_completion_tokens", "max_tokens", "modalities", "n",
        "parallel_tool_calls", "presence_penalty", "response_format", "safety_identifier",
        "service_tier", "stop", "temperature", "tool_choice", "tools", "top_logprobs", "top_p",
        "user",
    }
)  # fmt: skip


def _invalid(message: str, param: str) -> InvalidRequestError:
    return InvalidRequestError(f"anthropic:// {message}", param=param)


# ---------------------------------------------------------------------------------------------
# Requests


def _headers(spec: BackendSpec, accept: str, request: ChatRequest | None) -> dict[str, str]:
    base = {"Accept": accept, "anthropic-version": ANTHROPIC_VERSION}
    if request is not None:
        base["Content-Type"] = "application/json"
    return openai_compat.request_headers(spec, base, request, key_header="x-api-key", key_prefix="")


def build_chat(spec: BackendSpec, request: ChatRequest, model: str) -> HTTPRequest:
    """The ``POST /v1/messages`` request for ``request``.

    Raises:
        InvalidRequestError: for what the Messages API cannot do (``seed``, ``n > 1``,
            ``logprobs``, ``temperature`` above 1, JSON mode...).
    """
    system, turns = _convert_messages(request.messages)
    params = request.params
    max_tokens = params.get("max_completion_tokens") or params.get("max_tokens")
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": max_tokens or DEFAULT_MAX_TOKENS,
        "messages": turns,
    }
    if system:
        body["system"] = system[0]["text"] if len(system) == 1 else system
    _translate_params(body, params)
    if request.stream:
        body["stream"] = True
    if request.extra_body:
        body.update(request.extra_body)
    return HTTPRequest(
        method="POST",
        url=spec.base_url + "/messages",
        headers=_headers(
            spec, "text/event-stream" if request.stream else "application/json", request
        ),
        body=pydantic_core.to_json(body),
        backend=spec.name,
    )


def _translate_params(body: dict[str, Any], params: Mapping[str, Any]) -> None:
    for name in params:
        if name in _UNSUPPORTED:
            raise _invalid(f"does not support {name}: {_UNSUPPORTED[name]}", name)
        if name not in _TRANSLATED and name not in _IGNORED:
            raise _invalid(f"does not support {name}", name)
    if params.get("n", 1) != 1:
        raise _invalid("returns one choice per request: n must be 1", "n")
    if params.get("logprobs"):
        raise _invalid("does not return logprobs", "logprobs")
    for name in ("frequency_penalty", "presence_penalty"):
        if params.get(name):
            raise _invalid(f"does not support {name}", name)
    modalities = params.get("modalities")
    if modalities is not None and list(modalities) != ["text"]:
        raise _invalid("answers with text only: modalities must be ['text']", "modalities")
    temperature = params.get("temperature")
    if temperature is not None:
        if temperature > 1:
            raise _invalid(
                f"temperature must be between 0 and 1 (Anthropic's range), got {temperature}",
                "temperature",
            )
        body["temperature"] = temperature
    if params.get("top_p") is not None:
        body["top_p"] = params["top_p"]
    stop = params.get("stop")
    if stop:
        body["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    user = params.get("user") or params.get("safety_identifier")
    if user:
        body["metadata"] = {"user_id": user}
    tier = params.get("service_tier")
    if tier is not None:
        tiers = {"auto": "auto", "default": "standard_only"}
        if tier not in tiers:
            raise _invalid(
                f"service_tier must be 'auto' or 'default', got {tier!r}", "service_tier"
            )
        body["service_tier"] = tiers[tier]
    _translate_tools(body, params)


def _translate_tools(body: dict[str, Any], params: Mapping[str, Any]) -> None:
    tools = params.get("tools") or []
    converted = [_tool(tool, i) for i, tool in enumerate(tools)]
    choice = _tool_choice(params.get("tool_choice"), bool(converted))
    if params.get("parallel_tool_calls") is False and converted:
        choice = dict(choice or {"type": "auto"})
        if choice["type"] != "none":
            choice["disable_parallel_tool_use"] = True
    fmt = params.get("response_format") or {}
    if fmt.get("type") == "json_object":
        raise _invalid(
            "has no JSON mode: use response_format json_schema (sent as a forced tool)",
            "response_format",
        )
    if fmt.get("type") == "json_schema":
        if converted:
            raise _invalid(
                "sends response_format json_schema as a forced tool, which cannot be combined "
                "with tools",
                "response_format",
            )
        converted = [_json_tool(fmt["json_schema"])]
        choice = {"type": "tool", "name": converted[0]["name"]}
    if converted:
        body["tools"] = converted
    if choice is not None:
        body["tool_choice"] = choice


def _tool(tool: Any, i: int) -> dict[str, Any]:
    kind = tool.get("type", "function") if isinstance(tool, dict) else type(tool).__name__
    if kind != "function":
        raise _invalid(f"supports function tools only, got {kind!r}", f"tools[{i}]")
    fn = tool["function"]
    name = fn["name"]
    if name.startswith(JSON_TOOL_PREFIX):
        raise _invalid(f"reserves tool names starting with {JSON_TOOL_PREFIX!r}", f"tools[{i}]")
    converted: dict[str, Any] = {
        "name": name,
        "input_schema": fn.get("parameters") or {"type": "object", "properties": {}},
    }
    if fn.get("description"):
        converted["description"] = fn["description"]
    if fn.get("strict"):
        converted["strict"] = True
    return converted


def _tool_choice(choice: Any, has_tools: bool) -> dict[str, Any] | None:
    if choice is None:
        return None
    if choice in ("auto", "none"):
        return {"type": choice} if has_tools else None
    if not has_tools:
        raise _invalid(f"tool_choice {choice!r} needs tools", "tool_choice")
    if choice == "required":
        return {"type": "any"}
    fn = choice.get("function") if isinstance(choice, dict) else None
    if isinstance(fn, dict) and isinstance(fn.get("name"), str):
        return {"type": "tool", "name": fn["name"]}
    raise _invalid(
        "tool_choice: expected 'auto', 'none', 'required' or "
        "{'type': 'function', 'function': {'name': ...}}",
        "tool_choice",
    )


def _json_tool(spec: Mapping[str, Any]) -> dict[str, Any]:
    schema = spec.get("schema") or {"type": "object", "properties": {}}
    if not isinstance(schema, dict) or schema.get("type") != "object":
        # A tool's input_schema must describe an object (anthropic.md 1.2).
        raise _invalid(
            "sends json_schema as a tool's input_schema, which must have type 'object'",
            "response_format.json_schema.schema",
        )
    name = _TOOL_NAME_CHARS.sub("_", str(spec.get("name") or "answer"))
    description = spec.get("description") or "Give the answer as this tool's input."
    tool = {"name": (JSON_TOOL_PREFIX + name)[:64], "description": description}
    tool["input_schema"] = schema
    if spec.get("strict"):
        tool["strict"] = True  # the tool's input must then follow the schema exactly
    return tool


def _convert_messages(
    messages: list[dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """OpenAI messages -> (system text blocks, alternating user/assistant turns)."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        role = message["role"]
        if role in ("system", "developer"):
            system.extend(_text_blocks(message.get("content"), where))
            continue
        if role == "user":
            blocks = _user_blocks(message.get("content"), where)
        elif role == "assistant":
            blocks = _assistant_blocks(message, where)
        elif role == "tool":
            role, blocks = "user", [_tool_result(message)]
        else:
            raise _invalid(f"does not support role {role!r}: use tool messages", f"{where}.role")
        if not blocks:
            continue
        # The Messages API wants alternating turns: merge consecutive ones of the same role
        # (tool results and the user message after them become one user turn).
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    if not turns:
        raise _invalid("needs at least one user or assistant message", "messages")
    for turn in turns:
        content = turn["content"]
        # tool_result blocks must come first in their user turn.
        content.sort(key=lambda block: block["type"] != "tool_result")
        if len(content) == 1 and content[0]["type"] == "text":
            turn["content"] = content[0]["text"]
    return system, turns


def _text_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks = []
    for j, part in enumerate(content or []):
        text = part.get(part["type"]) if part["type"] in ("text", "refusal") else None
        if not isinstance(text, str):
            raise _invalid(f"expected text parts, got {part['type']!r}", f"{where}.content[{j}]")
        if text:
            blocks.append({"type": "text", "text": text})
    return blocks


def _user_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    blocks = []
    for j, part in enumerate(content):
        if part["type"] == "text":
            blocks.append({"type": "text", "text": part["text"]})
        elif part["type"] == "image_url":
            blocks.append(_image_block(part.get("image_url"), f"{where}.content[{j}]"))
        else:
            raise _invalid(
                f"takes text and image_url parts, got {part['type']!r}", f"{where}.content[{j}]"
            )
    return blocks


def _image_block(image: Any, where: str) -> dict[str, Any]:
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        raise _invalid("image_url.url: expected a string", where)
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    match = _DATA_URI.fullmatch(url)
    if match is None:
        raise _invalid("image_url.url: expected an http(s) URL or a base64 data: URI", where)
    media_type = match.group(1).lower().replace("image/jpg", "image/jpeg")
    if media_type not in _IMAGE_TYPES:
        raise _invalid(
            f"accepts images of type {', '.join(sorted(_IMAGE_TYPES))}, got {media_type}", where
        )
    source = {"type": "base64", "media_type": media_type, "data": match.group(2)}
    return {"type": "image", "source": source}


def _assistant_blocks(message: Mapping[str, Any], where: str) -> list[dict[str, Any]]:
    blocks = _text_blocks(message.get("content"), where)
    for j, call in enumerate(message.get("tool_calls") or []):
        fn = call["function"]
        if not isinstance(call.get("id"), str):
            raise _invalid("tool call id: expected a string", f"{where}.tool_calls[{j}].id")
        raw = fn.get("arguments") or "{}"
        try:
            arguments = json.loads(raw)
        except ValueError:
            arguments = None
        if not isinstance(arguments, dict):
            raise _invalid(
                "tool call arguments must be a JSON object (sent as tool_use input)",
                f"{where}.tool_calls[{j}].function.arguments",
            )
        blocks.append(
            {"type": "tool_use", "id": call["id"], "name": fn["name"], "input": arguments}
        )
    return blocks


def _tool_result(message: Mapping[str, Any]) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": message["tool_call_id"]}
    content = message.get("content")
    if isinstance(content, list):
        content = [{"type": "text", "text": p["text"]} for p in content if p.get("text")]
    if content:
        block["content"] = content
    return block


def build_models(spec: BackendSpec) -> HTTPRequest:
    """``GET /v1/models`` (one page of up to 1000, the API's maximum)."""
    return HTTPRequest(
        method="GET",
        url=spec.base_url + "/models?limit=1000",
        headers=_headers(spec, "application/json", None),
        backend=spec.name,
    )


def build_health(spec: BackendSpec) -> HTTPRequest:
    """The health probe: ``GET /v1/models?limit=1`` (authenticated, cheap)."""
    return HTTPRequest(
        method="GET",
        url=spec.base_url + "/models?limit=1",
        headers=_headers(spec, "application/json", None),
        backend=spec.name,
    )


# ---------------------------------------------------------------------------------------------
# Responses and errors


def map_error(
    spec: BackendSpec, status: int, headers: Mapping[str, str], body: bytes
) -> StatusError:
    """The typed error for a non-2xx answer (``{"type": "error", "error": {...}}``)."""
    error = error_from_status(status, headers, body, backend=spec.name)
    if error.request_id is None and isinstance(error.body, dict):
        request_id = error.body.get("request_id")
        if isinstance(request_id, str):
            error.request_id = request_id
    return error


def _error_event(spec: BackendSpec, data: Mapping[str, Any]) -> StatusError:
    """An ``error`` object inside a 200 body or stream -> the typed error its type implies."""
    inner = data.get("error")
    kind = inner.get("type") if isinstance(inner, dict) else None
    status = _ERROR_STATUS.get(kind, 500) if isinstance(kind, str) else 500
    return map_error(spec, status, {}, pydantic_core.to_json(data))


def _json(raw: bytes) -> Any:
    try:
        return pydantic_core.from_json(raw)
    except ValueError:
        return None


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _usage(usage: Mapping[str, Any]) -> dict[str, Any]:
    # OpenAI's prompt_tokens counts every prompt token, cached ones included; Anthropic's
    # input_tokens excludes the tokens read from or written to the prompt cache.
    created = int(usage.get("cache_creation_input_tokens") or 0)
    read = int(usage.get("cache_read_input_tokens") or 0)
    prompt = int(usage.get("input_tokens") or 0) + created + read
    completion = int(usage.get("output_tokens") or 0)
    result: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if "cache_creation_input_tokens" in usage or "cache_read_input_tokens" in usage:
        result["prompt_tokens_details"] = {"cached_tokens": read, "cache_creation_tokens": created}
    return result


def _finish_reason(stop_reason: Any, json_answer: bool) -> str:
    if stop_reason == "tool_use" and json_answer:
        return "stop"  # the forced response_format tool: the answer is the content
    return _STOP_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def parse_chat(spec: BackendSpec, body: bytes) -> ChatCompletion:
    """A 200 ``message`` body -> :class:`ChatCompletion`."""
    data = _json(body)
    if isinstance(data, dict) and data.get("type") == "error":
        raise _error_event(spec, data)
    if not isinstance(data, dict) or not isinstance(data.get("content"), list):
        raise ProtocolError(f"response is not a message: {body[:200]!r}", backend=spec.name)
    try:
        return _completion(data)
    except (KeyError, TypeError, AttributeError, pydantic.ValidationError) as exc:
        raise ProtocolError(
            f"malformed message: {type(exc).__name__}: {exc}"[:300], backend=spec.name
        ) from None


def _completion(data: Mapping[str, Any]) -> ChatCompletion:
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    json_answer = False
    for block in data["content"]:
        kind = block["type"]
        if kind == "text":
            texts.append(block["text"])
        elif kind == "tool_use" and block["name"].startswith(JSON_TOOL_PREFIX):
            json_answer = True
            texts.append(_dumps(block.get("input") or {}))
        elif kind == "tool_use":
            function = {"name": block["name"], "arguments": _dumps(block.get("input") or {})}
            calls.append({"id": block["id"], "type": "function", "function": function})
        elif kind == "thinking":
            reasoning.append(block.get("thinking") or "")
        # redacted_thinking and server-tool blocks carry nothing an OpenAI message can hold.
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not calls else None,
    }
    if calls:
        message["tool_calls"] = calls
    if reasoning:
        message["reasoning"] = "".join(reasoning)
    completion: dict[str, Any] = {
        "id": data["id"],
        "object": "chat.completion",
        "created": int(time.time()),
        "model": data["model"],
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": _finish_reason(data.get("stop_reason"), json_answer),
                "logprobs": None,
            }
        ],
    }
    if isinstance(data.get("usage"), dict):
        completion["usage"] = _usage(data["usage"])
    return ChatCompletion.model_validate(completion)


def parse_models(spec: BackendSpec, body: bytes) -> ModelList:
    """Anthropic's ``{"data": [{"id", "type": "model", "display_name", "created_at"}]}``."""
    data = _json(body)
    if isinstance(data, dict) and data.get("type") == "error":
        raise _error_event(spec, data)
    entries = data.get("data") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not all(
        isinstance(e, dict) and isinstance(e.get("id"), str) for e in entries
    ):
        raise ProtocolError(f"malformed /models answer: {body[:200]!r}", backend=spec.name)
    models = []
    for entry in entries:
        extra = {"display_name": entry["display_name"]} if "display_name" in entry else {}
        models.append(
            Model(
                id=entry["id"],
                object="model",
                created=_epoch(entry.get("created_at")),
                owned_by="anthropic",
                **extra,
            )
        )
    return ModelList(object="list", data=models)


def _epoch(value: Any) -> int:
    """An RFC 3339 time as Unix seconds (0 when absent or unreadable)."""
    if not isinstance(value, str):
        return 0
    try:
        return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return 0


# ---------------------------------------------------------------------------------------------
# Streams


class ChunkDecoder(SSEChunkDecoder):
    """Anthropic SSE events -> OpenAI :class:`ChatCompletionChunk` values (anthropic.md 3).

    ``message_start`` gives the role chunk; text deltas become content; a ``tool_use`` block
    becomes tool-call fragments (``index`` counts tool calls, as OpenAI does, not content
    blocks); ``message_delta`` gives the finish chunk, which carries the usage; ``message_stop``
    ends the stream. ``ping`` and unknown events carry nothing; an ``error`` event raises the
    typed error its type implies (``overloaded_error`` -> :class:`ServerError`, as a 529).
    """

    __slots__ = ("_blocks", "_created", "_id", "_model", "_next_tool", "_usage")

    TERMINATOR = "message_stop"
    FINISH = "stop_reason"

    def __init__(self, spec: BackendSpec) -> None:
        super().__init__(spec)
        self._id = ""
        self._model = ""
        self._created = int(time.time())
        self._usage: dict[str, Any] = {}
        # content block index -> [kind, tool index, whether input arrived]
        self._blocks: dict[int, list[Any]] = {}
        self._next_tool = 0

    def parse(self, event: bytes) -> ChatCompletionChunk | None:
        """One event as a chunk; ``None`` for events that carry nothing for the caller."""
        if self._done:
            return None
        data = _json(event)
        if not isinstance(data, dict) or not isinstance(data.get("type"), str):
            raise ProtocolError(f"malformed stream event: {event[:200]!r}", backend=self._spec.name)
        kind = data["type"]
        if kind == "error":
            raise _error_event(self._spec, data)
        try:
            return self._parse(kind, data)
        except (KeyError, TypeError, AttributeError, pydantic.ValidationError) as exc:
            raise ProtocolError(
                f"malformed {kind} event: {event[:200]!r}", backend=self._spec.name
            ) from exc

    def _parse(self, kind: str, data: dict[str, Any]) -> ChatCompletionChunk | None:
        if kind == "content_block_delta":
            return self._delta(data["index"], data["delta"])
        if kind == "content_block_start":
            return self._block_start(data["index"], data["content_block"])
        if kind == "content_block_stop":
            return self._block_stop(data["index"])
        if kind == "message_start":
            message = data["message"]
            self._id, self._model = message["id"], message["model"]
            self._usage.update(message.get("usage") or {})
            return self._chunk({"role": "assistant", "content": ""})
        if kind == "message_delta":
            self._usage.update(data.get("usage") or {})
            stop_reason = data["delta"].get("stop_reason")
            if stop_reason is None or self._finished:
                return None
            self._finished = True
            json_answer = any(b[0] == "json" for b in self._blocks.values())
            return self._chunk(
                {}, _finish_reason(stop_reason, json_answer), usage=_usage(self._usage)
            )
        if kind == "message_stop":
            self._done = True
        return None  # message_stop, ping, and event types added later

    def _block_start(self, index: int, block: dict[str, Any]) -> ChatCompletionChunk | None:
        kind = block["type"]
        if kind == "text":
            self._blocks[index] = ["text", None, False]
            return self._chunk({"content": block["text"]}) if block.get("text") else None
        # The input arrives in input_json_delta fragments; the start block's is {} (anthropic.md 3).
        given = _dumps(block["input"]) if block.get("input") else ""
        if kind == "tool_use" and block["name"].startswith(JSON_TOOL_PREFIX):
            self._blocks[index] = ["json", None, bool(given)]
            return self._chunk({"content": given}) if given else None
        if kind == "tool_use":
            tool = self._next_tool
            self._next_tool += 1
            self._blocks[index] = ["tool", tool, bool(given)]
            function = {"name": block["name"], "arguments": given}
            call = {"index": tool, "id": block["id"], "type": "function", "function": function}
            return self._chunk({"tool_calls": [call]})
        self._blocks[index] = [kind, None, False]
        return None

    def _delta(self, index: int, delta: dict[str, Any]) -> ChatCompletionChunk | None:
        kind = delta["type"]
        if kind == "text_delta":
            return self._chunk({"content": delta["text"]}) if delta["text"] else None
        if kind == "input_json_delta":
            block = self._blocks[index]
            fragment = delta["partial_json"]
            if not fragment:
                return None  # the first fragment may be ""
            block[2] = True
            return self._input(block, fragment)
        if kind == "thinking_delta":
            return self._chunk({"reasoning": delta["thinking"]})
        return None  # signature_delta, citations_delta

    def _block_stop(self, index: int) -> ChatCompletionChunk | None:
        block = self._blocks.get(index)
        if block is not None and block[0] in ("tool", "json") and not block[2]:
            return self._input(block, "{}")  # no input fragments: the input is {}
        return None

    def _input(self, block: list[Any], fragment: str) -> ChatCompletionChunk:
        if block[0] == "json":
            return self._chunk({"content": fragment})
        return self._chunk(
            {"tool_calls": [{"index": block[1], "function": {"arguments": fragment}}]}
        )

    def _chunk(
        self, delta: dict[str, Any], finish: str | None = None, usage: Any = None
    ) -> ChatCompletionChunk:
        return stream_chunk(self._id, self._created, self._model, delta, finish, usage)


BACKEND = BackendDeclaration(
    "anthropic",
    description="the Anthropic Messages API",
    default_host="api.anthropic.com",
    key_env="ANTHROPIC_API_KEY",
    key_required=True,
    transport="https",
    capabilities=CAPABILITIES,
)

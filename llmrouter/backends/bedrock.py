"""Codec for Amazon Bedrock's Converse API (``bedrock://MODEL_ID?region=us-east-1``).

``Converse`` (``POST /model/{modelId}/converse``) answers one JSON body; ``ConverseStream``
(``POST /model/{modelId}/converse-stream``) answers an AWS event stream whose events
(``messageStart``, ``contentBlockStart``/``Delta``/``Stop``, ``messageStop``, ``metadata``) and
exceptions (``throttlingException``, ``modelStreamErrorException``...) are JSON payloads. Every
request is SigV4-signed (signing name ``bedrock``) through :func:`llmrouter.backends.sigv4_headers`,
with botocore's credential chain, refreshed off the event loop by the driver (``prepare``).
What was relied on: ``docs/backends/bedrock.md`` (the Bedrock API reference pages).

The model id is a foundation-model id, a cross-region inference-profile id (``us.anthropic...``)
or an ARN. An ARN holds ``:`` and ``/``, which ``urlsplit`` reads as a port and a path: write it
percent-encoded in the URL's authority (``bedrock://arn%3Aaws%3Abedrock...``) or give it as
``?model=ARN``. In the request path the id is percent-encoded (``/`` as ``%2F``), except ``:``
and ``@``: aiohttp (yarl) decodes those on the wire, and the signature must cover the path that
is actually sent (AWS decodes the path before routing, so both spellings name the same model).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, unquote

import pydantic
import pydantic_core

from llmrouter._http import HTTPRequest
from llmrouter._request import ChatRequest
from llmrouter._status import error_from_status
from llmrouter.backends import (
    BackendDeclaration,
    BackendSpec,
    Capabilities,
    EventStreamDecoder,
    Option,
    URLParts,
    sigv4_headers,
)

# Credentials: the same path as SageMaker's (resolved once, refreshed in a worker thread).
# These are not in the public llmrouter.backends namespace (only sigv4_headers is).
from llmrouter.backends.sigv4 import needs_prepare, prepare, reset_credentials, session
from llmrouter.errors import (
    AuthenticationError,
    BackendConnectionError,
    BadRequestError,
    ConfigError,
    ContextLengthError,
    InvalidRequestError,
    NotFoundError,
    ProtocolError,
    RateLimitError,
    ServerError,
    StatusError,
)
from llmrouter.types import ChatCompletion, ChatCompletionChunk, Model, ModelList, stream_chunk

__all__ = [
    "CAPABILITIES", "JSON_TOOL_PREFIX", "SIGNING_NAME", "ChunkDecoder", "build_chat",
    "build_health", "build_models", "control_url", "map_error", "model_id", "needs_prepare",
    "parse_chat", "parse_models", "prepare", "reset_credentials", "runtime_url",
]  # fmt: skip

SIGNING_NAME = "bedrock"  # bedrock-runtime signs as "bedrock" (its endpoint prefix differs)

CAPABILITIES = Capabilities(
    tools=True,
    tool_choice=True,  # auto / any / a named tool (named: Anthropic, Mistral Large, Nova)
    json_object=False,  # no JSON mode; json_schema goes through a forced tool
    json_schema=True,
    stream_usage=True,  # the metadata event always carries usage
    seed=False,
    n=False,
    logprobs=False,
    stop=True,
)

# response_format json_schema is sent as a forced tool whose name starts with this prefix; its
# input is returned as the message content (as the Anthropic codec does).
JSON_TOOL_PREFIX = "json_response__"

_STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}
_IMAGE_FORMATS = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
}
_DATA_URI = re.compile(r"data:([\w.+-]+/[\w.+-]+);base64,(.*)", re.DOTALL)
_TOOL_NAME_CHARS = re.compile(r"[^a-zA-Z0-9_-]")

_UNSUPPORTED = {
    "seed": "Converse has no seed",
    "logprobs": "Converse returns no logprobs",
    "top_logprobs": "Converse returns no logprobs",
    "logit_bias": "Converse has no logit_bias",
    "audio": "audio output is not available",
    "modalities": "Converse answers with text",
    "prediction": "predicted outputs are not available",
    "web_search_options": "web search is not available",
    "functions": "use tools",
    "function_call": "use tool_choice",
    "reasoning_effort": "use extra_body additionalModelRequestFields for reasoning settings",
    "verbosity": "Converse has no verbosity setting",
    "service_tier": "Converse has no service tier",
    "frequency_penalty": "Converse has no frequency_penalty",
    "presence_penalty": "Converse has no presence_penalty",
}
# Bookkeeping fields with no effect on the answer: not sent (usage is always streamed).
_IGNORED = frozenset(
    {"store", "metadata", "prompt_cache_key", "stream_options", "user", "safety_identifier",
     "parallel_tool_calls"}
)  # fmt: skip


def _invalid(message: str, param: str) -> InvalidRequestError:
    return InvalidRequestError(f"bedrock:// {message}", param=param)


def _options(spec: BackendSpec) -> dict[str, str]:
    return dict(spec.options)


# ---------------------------------------------------------------------------------------------
# Where requests go


def model_id(spec: BackendSpec, model: str | None = None) -> str:
    """The model id, inference-profile id or ARN this request names (decoded)."""
    chosen = model or spec.model or unquote(spec.location)
    if not chosen:
        raise ConfigError(f"{spec.name}: expected bedrock://MODEL_ID or ?model=MODEL_ID")
    return chosen


def _region(spec: BackendSpec, env: Mapping[str, str]) -> str:
    region = _options(spec).get("region") or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if not region:
        region = session(_options(spec).get("profile") or None).get_config_variable("region")
    if not region:
        raise ConfigError(
            f"{spec.name}: no AWS region: add ?region=REGION to the URL, or set AWS_REGION"
        )
    return str(region)


def _configured(env: Mapping[str, str], var: str) -> str | None:
    if env.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() == "true":
        return None
    return env.get(var) or env.get("AWS_ENDPOINT_URL") or None


def _checked(raw: str, what: str) -> str:
    if not raw.startswith(("http://", "https://")):
        raise ConfigError(f"{what}={raw!r}: expected an http:// or https:// URL")
    return raw.rstrip("/")


def _suffix(region: str) -> str:
    return "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"


def runtime_url(spec: BackendSpec, env: Mapping[str, str] | None = None) -> str:
    """``?endpoint=`` (tests, VPC endpoints), else ``AWS_ENDPOINT_URL_BEDROCK_RUNTIME``, else
    ``AWS_ENDPOINT_URL``, else ``https://bedrock-runtime.{region}.amazonaws.com``."""
    env = os.environ if env is None else env
    given = _options(spec).get("endpoint")
    if given:
        return _checked(given, "endpoint")
    configured = _configured(env, "AWS_ENDPOINT_URL_BEDROCK_RUNTIME")
    if configured:
        return _checked(configured, "AWS_ENDPOINT_URL_BEDROCK_RUNTIME")
    region = _region(spec, env)
    return f"https://bedrock-runtime.{region}.{_suffix(region)}"


def control_url(spec: BackendSpec, env: Mapping[str, str] | None = None) -> str:
    """The Bedrock control plane (``ListFoundationModels``): ``?endpoint=``, else
    ``AWS_ENDPOINT_URL_BEDROCK``, else ``AWS_ENDPOINT_URL``, else ``https://bedrock.{region}...``."""
    env = os.environ if env is None else env
    given = _options(spec).get("endpoint")
    if given:
        return _checked(given, "endpoint")
    configured = _configured(env, "AWS_ENDPOINT_URL_BEDROCK")
    if configured:
        return _checked(configured, "AWS_ENDPOINT_URL_BEDROCK")
    region = _region(spec, env)
    return f"https://bedrock.{region}.{_suffix(region)}"


def _path_id(model: str) -> str:
    # "/" must be encoded (an ARN's resource part); ":" and "@" stay: yarl decodes them on the
    # wire and the signed path must be the path sent (module docstring).
    return quote(model, safe=":@")


# ---------------------------------------------------------------------------------------------
# Requests


def build_chat(spec: BackendSpec, request: ChatRequest, model: str) -> HTTPRequest:
    """The signed ``Converse`` (or ``ConverseStream``) request.

    Raises:
        InvalidRequestError: for what Converse cannot express (seed, n > 1, logprobs, JSON mode,
            penalties, an image given by URL...).
    """
    body = converse_body(request)
    raw = pydantic_core.to_json(body)
    op = "converse-stream" if request.stream else "converse"
    url = f"{runtime_url(spec)}/model/{_path_id(model_id(spec, model))}/{op}"
    headers = {"Content-Type": "application/json"}
    headers["Accept"] = (
        "application/vnd.amazon.eventstream" if request.stream else "application/json"
    )
    headers.update(spec.headers)
    headers.update(request.extra_headers)
    return HTTPRequest(
        method="POST",
        url=url,
        headers=sigv4_headers(spec, url, headers, raw, _region(spec, os.environ), SIGNING_NAME),
        body=raw,
        backend=spec.name,
    )


def converse_body(request: ChatRequest) -> dict[str, Any]:
    """The Converse request body for an OpenAI-shaped request (pure)."""
    params = request.params
    for name in params:
        if name in _UNSUPPORTED and params[name] not in (None, False, 0):
            raise _invalid(f"does not support {name}: {_UNSUPPORTED[name]}", name)
    if params.get("n", 1) != 1:
        raise _invalid("returns one choice per request: n must be 1", "n")
    system, messages = _convert_messages(request.messages)
    body: dict[str, Any] = {"messages": messages}
    if system:
        body["system"] = system
    config: dict[str, Any] = {}
    max_tokens = params.get("max_completion_tokens") or params.get("max_tokens")
    if max_tokens:
        config["maxTokens"] = max_tokens
    if params.get("temperature") is not None:
        config["temperature"] = params["temperature"]
    if params.get("top_p") is not None:
        config["topP"] = params["top_p"]
    stop = params.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    if config:
        body["inferenceConfig"] = config
    tool_config = _tool_config(params, _has_tool_blocks(messages))
    if tool_config is not None:
        body["toolConfig"] = tool_config
    if request.extra_body:
        body.update(request.extra_body)  # additionalModelRequestFields, guardrailConfig...
    return body


def _has_tool_blocks(messages: list[dict[str, Any]]) -> bool:
    return any("toolUse" in b or "toolResult" in b for m in messages for b in m["content"])


def _tool_config(params: Mapping[str, Any], history: bool) -> dict[str, Any] | None:
    tools = [_tool(t, i) for i, t in enumerate(params.get("tools") or [])]
    choice = params.get("tool_choice")
    fmt = params.get("response_format") or {}
    if fmt.get("type") == "json_object":
        raise _invalid(
            "has no JSON mode: use response_format json_schema (sent as a forced tool)",
            "response_format",
        )
    if fmt.get("type") == "json_schema":
        if tools:
            raise _invalid(
                "sends response_format json_schema as a forced tool, which cannot be combined "
                "with tools",
                "response_format",
            )
        tool = _json_tool(fmt["json_schema"])
        return {"tools": [tool], "toolChoice": {"tool": {"name": tool["toolSpec"]["name"]}}}
    if not tools:
        if choice not in (None, "none", "auto"):
            raise _invalid(f"tool_choice {choice!r} needs tools", "tool_choice")
        return None
    if choice == "none":
        if history:
            raise _invalid(
                "cannot forbid tool calls (no tool_choice 'none') in a conversation with tool "
                "calls: leave tool_choice out",
                "tool_choice",
            )
        return None  # no tools offered: the model cannot call one
    config: dict[str, Any] = {"tools": tools}
    if choice is None or choice == "auto":
        config["toolChoice"] = {"auto": {}}
    elif choice == "required":
        config["toolChoice"] = {"any": {}}
    else:
        fn = choice.get("function") if isinstance(choice, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise _invalid(
                "tool_choice: expected 'auto', 'none', 'required' or "
                "{'type': 'function', 'function': {'name': ...}}",
                "tool_choice",
            )
        config["toolChoice"] = {"tool": {"name": fn["name"]}}
    return config


def _tool(tool: Any, i: int) -> dict[str, Any]:
    kind = tool.get("type", "function") if isinstance(tool, dict) else None
    if kind != "function":
        raise _invalid(f"supports function tools only, got {kind!r}", f"tools[{i}]")
    fn = tool["function"]
    if fn["name"].startswith(JSON_TOOL_PREFIX):
        raise _invalid(f"reserves tool names starting with {JSON_TOOL_PREFIX!r}", f"tools[{i}]")
    spec: dict[str, Any] = {
        "name": fn["name"],
        "inputSchema": {"json": fn.get("parameters") or {"type": "object", "properties": {}}},
    }
    if fn.get("description"):
        spec["description"] = fn["description"]
    return {"toolSpec": spec}


def _json_tool(fmt: Mapping[str, Any]) -> dict[str, Any]:
    schema = fmt.get("schema") or {"type": "object", "properties": {}}
    if not isinstance(schema, dict) or schema.get("type") != "object":
        raise _invalid(
            "sends json_schema as a tool's inputSchema, which must have type 'object'",
            "response_format.json_schema.schema",
        )
    name = _TOOL_NAME_CHARS.sub("_", str(fmt.get("name") or "answer"))
    spec = {
        "name": (JSON_TOOL_PREFIX + name)[:64],
        "description": fmt.get("description") or "Give the answer as this tool's input.",
        "inputSchema": {"json": schema},
    }
    return {"toolSpec": spec}


def _convert_messages(
    messages: list[dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """OpenAI messages -> (system blocks, alternating user/assistant messages)."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        role = message["role"]
        if role in ("system", "developer"):
            system.extend({"text": t} for t in _texts(message.get("content"), where))
            continue
        if role == "user":
            blocks = _user_blocks(message.get("content"), where)
        elif role == "assistant":
            blocks = _assistant_blocks(message, where)
        elif role == "tool":
            role, blocks = "user", [_tool_result(message, where)]
        else:
            raise _invalid(f"does not support role {role!r}: use tool messages", f"{where}.role")
        if not blocks:
            continue
        # Converse wants alternating turns: merge consecutive ones of the same role (parallel
        # tool results and the user text after them become one user turn).
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    if not turns:
        raise _invalid("needs at least one user or assistant message", "messages")
    return system, turns


def _texts(content: Any, where: str) -> list[str]:
    if isinstance(content, str):
        return [content] if content else []
    texts = []
    for j, part in enumerate(content or []):
        text = part.get(part["type"]) if part["type"] in ("text", "refusal") else None
        if not isinstance(text, str):
            raise _invalid(f"expected text parts, got {part['type']!r}", f"{where}.content[{j}]")
        if text:
            texts.append(text)
    return texts


def _user_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}]
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        if part["type"] == "text":
            blocks.append({"text": part["text"]})
        elif part["type"] == "image_url":
            blocks.append(_image_block(part.get("image_url"), f"{where}.content[{j}]"))
        else:
            raise _invalid(
                f"takes text and image_url parts, got {part['type']!r}", f"{where}.content[{j}]"
            )
    return blocks


def _image_block(image: Any, where: str) -> dict[str, Any]:
    url = image.get("url") if isinstance(image, dict) else image
    match = _DATA_URI.fullmatch(url) if isinstance(url, str) else None
    if match is None:
        # Converse takes image bytes (or an S3 location), never an http(s) URL.
        raise _invalid("image_url.url: expected a base64 data: URI (Converse takes bytes)", where)
    media_type = match.group(1).lower().replace("image/jpg", "image/jpeg")
    if media_type not in _IMAGE_FORMATS:
        raise _invalid(
            f"accepts images of type {', '.join(sorted(_IMAGE_FORMATS))}, got {media_type}", where
        )
    # Blob members travel base64-encoded in the JSON body (AWS rest-json).
    return {"image": {"format": _IMAGE_FORMATS[media_type], "source": {"bytes": match.group(2)}}}


def _assistant_blocks(message: Mapping[str, Any], where: str) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = [{"text": t} for t in _texts(message.get("content"), where)]
    for j, call in enumerate(message.get("tool_calls") or []):
        fn = call["function"]
        try:
            arguments = json.loads(fn.get("arguments") or "{}")
        except ValueError:
            arguments = None
        if not isinstance(arguments, dict):
            raise _invalid(
                "tool call arguments must be a JSON object (sent as toolUse input)",
                f"{where}.tool_calls[{j}].function.arguments",
            )
        use = {"toolUseId": call["id"], "name": fn["name"], "input": arguments}
        blocks.append({"toolUse": use})
    return blocks


def _tool_result(message: Mapping[str, Any], where: str) -> dict[str, Any]:
    texts = _texts(message.get("content"), where)
    result = {
        "toolUseId": message["tool_call_id"],
        "content": [{"text": t} for t in texts] or [{"text": ""}],
    }
    return {"toolResult": result}


def build_models(spec: BackendSpec) -> HTTPRequest:
    """A signed ``ListFoundationModels`` (``GET /foundation-models``) on the control plane."""
    url = control_url(spec) + "/foundation-models?byOutputModality=TEXT"
    headers = {"Accept": "application/json", **dict(spec.headers)}
    return HTTPRequest(
        method="GET",
        url=url,
        headers=sigv4_headers(
            spec, url, headers, b"", _region(spec, os.environ), SIGNING_NAME, method="GET"
        ),
        backend=spec.name,
    )


def build_health(spec: BackendSpec) -> HTTPRequest:
    """The health probe: ``ListFoundationModels`` (credentials valid, region reachable)."""
    return build_models(spec)


# ---------------------------------------------------------------------------------------------
# Errors

_RATE = frozenset(
    {"ThrottlingException", "ServiceQuotaExceededException", "TooManyRequestsException"}
)
_SERVER = frozenset(
    {"ModelNotReadyException", "ServiceUnavailableException", "InternalServerException",
     "ModelTimeoutException", "ModelErrorException", "ModelStreamErrorException",
     "InternalFailure", "ServiceUnavailable"}
)  # fmt: skip
_AUTH = frozenset(
    {"AccessDeniedException", "UnrecognizedClientException", "InvalidSignatureException",
     "IncompleteSignature", "MissingAuthenticationToken", "ExpiredTokenException",
     "InvalidClientTokenId", "SignatureDoesNotMatch"}
)  # fmt: skip
_CONTEXT = re.compile(
    r"too long|too many (input )?tokens|context (length|window)|maximum context|"
    r"exceeds? the (model'?s? )?(maximum|max)",
    re.IGNORECASE,
)
_UNKNOWN_MODEL = re.compile(
    r"model identifier is invalid|model .* (not found|does not exist)", re.I
)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None


def _code(headers: Mapping[str, str], data: Any, status: int) -> str:
    """botocore's rule: ``x-amzn-ErrorType``, else ``__type``/``code``; cut at ``:`` and ``#``."""
    code = _header(headers, "x-amzn-ErrorType")
    if not code and isinstance(data, dict):
        code = data.get("__type") or data.get("code") or data.get("Code")
    text = str(code) if code else str(status)
    return text.split(":", 1)[0].rsplit("#", 1)[-1]


def map_error(
    spec: BackendSpec, status: int, headers: Mapping[str, str], body: bytes
) -> StatusError:
    """Bedrock's modeled errors -> the typed tree (``docs/backends/bedrock.md``)."""
    try:
        data: Any = pydantic_core.from_json(body) if body else None
    except ValueError:
        data = None
    code = _code(headers, data, status)
    base = error_from_status(status, headers, body, backend=spec.name)
    message = (
        str(data.get("message") or data.get("Message") or "") if isinstance(data, dict) else ""
    )
    message = message or base.message.removeprefix(f"HTTP {status}: ")
    fields: dict[str, Any] = {
        "backend": spec.name,
        "status_code": status,
        "body": data if data is not None else base.body,
        "retry_after": base.retry_after,
        "request_id": _header(headers, "x-amzn-RequestId") or base.request_id,
        "error_type": code,
    }
    text = f"{code}: {message}"
    if code in _RATE:
        return RateLimitError(text, **fields)
    if code in _SERVER:
        return ServerError(text, retryable=True, **fields)
    if code in _AUTH:
        return AuthenticationError(text, **fields)
    if code == "ResourceNotFoundException":
        return NotFoundError(text, **fields)
    if code == "ValidationException" or status == 400:
        if _UNKNOWN_MODEL.search(message):
            return NotFoundError(text, **fields)  # an unknown model id is a 400 ValidationException
        cls = ContextLengthError if _CONTEXT.search(message) else BadRequestError
        return cls(text, **fields)
    if status >= 500:
        return ServerError(text, **fields)
    return type(base)(text, **fields)


# ---------------------------------------------------------------------------------------------
# Responses


def _new_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def _usage(usage: Any) -> dict[str, Any] | None:
    if not isinstance(usage, dict):
        return None
    prompt = int(usage.get("inputTokens") or 0)
    read = int(usage.get("cacheReadInputTokens") or 0)
    written = int(usage.get("cacheWriteInputTokens") or 0)
    prompt += read + written  # OpenAI's prompt_tokens counts cached tokens too
    completion = int(usage.get("outputTokens") or 0)
    result: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if read or written:
        result["prompt_tokens_details"] = {"cached_tokens": read, "cache_creation_tokens": written}
    return result


def _finish(reason: Any, json_answer: bool) -> str:
    if reason == "tool_use" and json_answer:
        return "stop"
    return _STOP_REASONS.get(reason, "stop") if isinstance(reason, str) else "stop"


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def parse_chat(spec: BackendSpec, body: bytes) -> ChatCompletion:
    """A ``Converse`` answer -> :class:`ChatCompletion`."""
    try:
        data = pydantic_core.from_json(body)
    except ValueError:
        raise ProtocolError(
            f"Converse answer is not JSON: {body[:200]!r}", backend=spec.name
        ) from None
    try:
        return _completion(spec, data)
    except (KeyError, TypeError, AttributeError, pydantic.ValidationError) as exc:
        raise ProtocolError(
            f"malformed Converse answer: {type(exc).__name__}: {exc}"[:300], backend=spec.name
        ) from None


def _completion(spec: BackendSpec, data: dict[str, Any]) -> ChatCompletion:
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    json_answer = False
    for block in data["output"]["message"]["content"]:
        if "text" in block:
            texts.append(block["text"])
        elif "toolUse" in block:
            use = block["toolUse"]
            if use["name"].startswith(JSON_TOOL_PREFIX):
                json_answer = True
                texts.append(_dumps(use.get("input") or {}))
                continue
            function = {"name": use["name"], "arguments": _dumps(use.get("input") or {})}
            calls.append({"id": use["toolUseId"], "type": "function", "function": function})
        elif "reasoningContent" in block:
            text = (block["reasoningContent"].get("reasoningText") or {}).get("text")
            if isinstance(text, str):
                reasoning.append(text)
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not calls else None,
    }
    if calls:
        message["tool_calls"] = calls
    if reasoning:
        message["reasoning"] = "".join(reasoning)
    completion: dict[str, Any] = {
        "id": _new_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model_id(spec),
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": _finish(data.get("stopReason"), json_answer),
                "logprobs": None,
            }
        ],
    }
    usage = _usage(data.get("usage"))
    if usage is not None:
        completion["usage"] = usage
    return ChatCompletion.model_validate(completion)


def parse_models(spec: BackendSpec, body: bytes) -> ModelList:
    """``ListFoundationModels`` -> the model ids (``modelSummaries[].modelId``)."""
    try:
        data = pydantic_core.from_json(body)
        ids = [str(m["modelId"]) for m in data["modelSummaries"]]
    except (ValueError, KeyError, TypeError):
        raise ProtocolError(
            f"malformed ListFoundationModels answer: {body[:200]!r}", backend=spec.name
        ) from None
    return ModelList(object="list", data=[Model(id=i, created=0, owned_by="bedrock") for i in ids])


# ---------------------------------------------------------------------------------------------
# Streams

# Raw events as ``feed`` frames them: KIND + 0x00 + payload, KIND one of these markers.
_EVENT, _EXCEPTION, _BROKEN, _END = b"e", b"x", b"b", b"z"
# In-stream exception -> the status the same error has as an HTTP answer (ConverseStreamOutput).
_STREAM_STATUS = {
    "internalServerException": 500,
    "modelStreamErrorException": 424,
    "validationException": 400,
    "throttlingException": 429,
    "serviceUnavailableException": 503,
    "serviceQuotaExceededException": 429,
}


class ChunkDecoder:
    """ConverseStream event-stream bytes -> :class:`ChatCompletionChunk` values.

    ``messageStart`` gives the role chunk; text deltas become content; a ``toolUse`` block
    becomes tool-call fragments (``index`` counts tool calls); ``messageStop`` records the stop
    reason (the answer is whole); the ``metadata`` event after it gives the one finish chunk,
    which carries the usage (if the body ends without it, the finish chunk comes without usage).
    An exception message raises the typed error where it stands, after the content before it.
    """

    __slots__ = (
        "_blocks", "_created", "_done", "_finished", "_frames", "_id", "_model", "_next_tool",
        "_spec", "_stop",
    )  # fmt: skip

    def __init__(self, spec: BackendSpec) -> None:
        self._spec = spec
        self._frames = EventStreamDecoder()
        self._done = False
        self._finished = False
        self._stop: str | None = None
        self._id = _new_id()
        self._created = int(time.time())
        self._model = model_id(spec)
        # contentBlockIndex -> ("tool", tool index) or ("json", -1)
        self._blocks: dict[int, tuple[str, int]] = {}
        self._next_tool = 0

    @property
    def done(self) -> bool:
        """The finish chunk (after ``metadata``) was given."""
        return self._done

    @property
    def finished(self) -> bool:
        """``messageStop`` arrived: the answer is whole."""
        return self._finished or self._done

    def feed(self, data: bytes) -> list[bytes]:
        """Frame more body bytes into raw events (not parsed yet)."""
        if self._frames.error is not None:
            return []
        try:
            messages = list(self._frames.feed(data))
        except ValueError as exc:  # EventStreamError: a frame failed its checks
            return [_BROKEN + b"\x00" + str(exc).encode()]
        events = []
        for message in messages:
            kind = message.header(":message-type")
            if kind == "event":
                name = message.header(":event-type") or ""
                events.append(_EVENT + name.encode() + b"\x00" + message.payload)
            elif kind == "exception":
                name = message.header(":exception-type") or "exception"
                events.append(_EXCEPTION + name.encode() + b"\x00" + message.payload)
            else:  # "error": an unmodeled failure
                code = message.header(":error-code") or f"message type {kind!r}"
                text = message.header(":error-message") or ""
                payload = pydantic_core.to_json({"message": text})
                events.append(_EXCEPTION + code.encode() + b"\x00" + payload)
        if self._frames.error is not None:
            events.append(_BROKEN + b"\x00" + str(self._frames.error).encode())
        return events

    def close(self) -> list[bytes]:
        """The body ended: a finish chunk is still owed when ``metadata`` never came."""
        return [_END + b"\x00"] if self._finished and not self._done else []

    def check_end(self) -> None:
        """The body ended and every event is parsed: complain if the answer was cut short."""
        if not self.finished:  # after messageStop the answer is whole, whatever follows
            raise BackendConnectionError("stream ended before messageStop", backend=self._spec.name)

    def parse(self, event: bytes) -> ChatCompletionChunk | None:
        """One raw event as a chunk; the typed error of an exception event."""
        head, _, payload = event.partition(b"\x00")
        marker, name = head[:1], head[1:].decode()
        spec = self._spec
        if marker == _BROKEN:
            raise ProtocolError(f"malformed event stream: {payload.decode()}", backend=spec.name)
        if marker == _END:
            self._done = True
            return self._chunk({}, _finish(self._stop, self._json_answer()))
        if self._done:
            return None
        try:
            data = pydantic_core.from_json(payload) if payload else {}
        except ValueError:
            raise ProtocolError(
                f"{name} event is not JSON: {payload[:200]!r}", backend=spec.name
            ) from None
        if marker == _EXCEPTION:
            raise self._exception(name, data, payload)
        try:
            return self._event(name, data)
        except (KeyError, TypeError, AttributeError, pydantic.ValidationError) as exc:
            raise ProtocolError(
                f"malformed {name} event: {payload[:200]!r}", backend=spec.name
            ) from exc

    def _exception(self, name: str, data: Any, payload: bytes) -> StatusError:
        status = _STREAM_STATUS.get(name, 500)
        code = name[:1].upper() + name[1:]  # modelStreamErrorException -> ModelStreamErrorException
        return map_error(self._spec, status, {"x-amzn-ErrorType": code}, payload)

    def _json_answer(self) -> bool:
        return any(kind == "json" for kind, _ in self._blocks.values())

    def _event(self, name: str, data: dict[str, Any]) -> ChatCompletionChunk | None:
        if name == "contentBlockDelta":
            return self._delta(data["contentBlockIndex"], data["delta"])
        if name == "contentBlockStart":
            return self._start(data["contentBlockIndex"], data["start"])
        if name == "messageStart":
            return self._chunk({"role": data.get("role") or "assistant", "content": ""})
        if name == "messageStop":
            self._stop = data.get("stopReason")
            self._finished = True
            return None
        if name == "metadata":
            if not self._finished:
                return None
            self._done = True
            finish = _finish(self._stop, self._json_answer())
            return self._chunk({}, finish, _usage(data.get("usage")))
        return None  # contentBlockStop, and event types added later

    def _start(self, index: int, start: dict[str, Any]) -> ChatCompletionChunk | None:
        use = start.get("toolUse")
        if not isinstance(use, dict):
            return None
        if use["name"].startswith(JSON_TOOL_PREFIX):
            self._blocks[index] = ("json", -1)
            return None
        tool = self._next_tool
        self._next_tool += 1
        self._blocks[index] = ("tool", tool)
        function = {"name": use["name"], "arguments": ""}
        call = {"index": tool, "id": use["toolUseId"], "type": "function", "function": function}
        return self._chunk({"tool_calls": [call]})

    def _delta(self, index: int, delta: dict[str, Any]) -> ChatCompletionChunk | None:
        if "text" in delta:
            return self._chunk({"content": delta["text"]}) if delta["text"] else None
        if "toolUse" in delta:
            fragment = delta["toolUse"].get("input") or ""
            kind, tool = self._blocks.get(index, ("tool", 0))
            if not fragment:
                return None
            if kind == "json":
                return self._chunk({"content": fragment})
            return self._chunk(
                {"tool_calls": [{"index": tool, "function": {"arguments": fragment}}]}
            )
        reasoning = delta.get("reasoningContent")
        if isinstance(reasoning, dict) and isinstance(reasoning.get("text"), str):
            return self._chunk({"reasoning": reasoning["text"]})
        return None

    def _chunk(
        self, delta: dict[str, Any], finish: str | None = None, usage: Any = None
    ) -> ChatCompletionChunk:
        return stream_chunk(self._id, self._created, self._model, delta, finish, usage)


# ---------------------------------------------------------------------------------------------
# Declaration


def _configure(spec: BackendSpec, url: URLParts, env: Mapping[str, str]) -> BackendSpec:
    """``bedrock://MODEL_ID`` (percent-encoded where it holds ``/``) or ``bedrock://?model=``:
    the model id labels the backend and is what every request names."""
    if url.transport:
        raise ConfigError(f"backend URL {spec.name!r}: bedrock:// takes no +http/+https")
    written = unquote(url.netloc + url.path)
    if written and spec.model and written != spec.model:
        raise ConfigError(
            f"backend URL {spec.name!r}: the model is named twice ({written!r} and ?model=)"
        )
    model = written or spec.model
    if not model:
        raise ConfigError(
            f"backend URL {spec.name!r}: expected bedrock://MODEL_ID?region=REGION "
            "(or ?model=MODEL_ID; an ARN goes percent-encoded or in ?model=)"
        )
    return dataclasses.replace(spec, location=written or model, model=model)


BACKEND = BackendDeclaration(
    "bedrock",
    description="Amazon Bedrock's Converse API (SigV4)",
    transport="https",
    location="name",
    options=(
        Option("region", help="the AWS region (else AWS_REGION, else the profile's)"),
        Option("endpoint", help="another endpoint URL: a VPC endpoint, a test server"),
        Option("profile", help="the AWS profile whose credentials sign requests"),
    ),
    configure=_configure,
    capabilities=CAPABILITIES,
    embeddings=True,
    embeddings_codec="llmrouter.backends.bedrock_embed",
)

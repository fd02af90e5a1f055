"""Codec for Text Generation Inference's Messages API (``tgi://``): TGI's rules over OpenAI's.

TGI serves ``POST /v1/chat/completions`` in the OpenAI shape with its own rules (facts from
``shared/protocols/tgi.md``, the TGI router source): ``top_p`` must be < 1, ``stop`` must be a
list, ``response_format`` is TGI's grammar object, ``logit_bias`` is not applied, ``n`` is
ignored, and ``model`` names a LoRA adapter (``"tgi"``: the served model). Answers have an empty
``id``, finish with ``stop_sequence``, and errors are ``{"error": str, "error_type": str}``
(422 validation, 424 generation, 429 overloaded) or axum's plain-text rejections. Mid-stream
errors always say ``http_status_code: 422``; their message tells what they are.

Everything else is the OpenAI-compatible codec's work, reused from ``openai_compat``. Model
discovery reads ``GET /info`` (model id and token limits); the health probe is ``GET /health``.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping
from typing import Any

import pydantic
import pydantic_core

from llmrouter._http import HTTPRequest
from llmrouter._request import ChatRequest
from llmrouter.backends import Capabilities, openai_compat
from llmrouter.backends.declaration import BackendDeclaration
from llmrouter.backends.openai_compat import build_health
from llmrouter.config import BackendSpec
from llmrouter.errors import (
    BadRequestError,
    ContextLengthError,
    InvalidRequestError,
    ProtocolError,
    RateLimitError,
    ServerError,
    StatusError,
)
from llmrouter.types import ChatCompletion, ChatCompletionChunk, Model, ModelList

__all__ = [
    "CAPABILITIES",
    "ChunkDecoder",
    "build_chat",
    "build_health",
    "build_models",
    "map_error",
    "parse_chat",
    "parse_models",
]

# json_object: TGI's JSON grammar needs a schema; schema-less JSON mode does not exist there.
# n: accepted by TGI and ignored. logprobs: supported (top_logprobs -> top_n_tokens).
CAPABILITIES = Capabilities(json_object=False, n=False, logprobs=True)

# The model name that means "the served model, no adapter" (tgi.md section 4).
SERVED_MODEL = "tgi"

# OpenAI fields TGI would silently ignore although they change the answer.
_UNSUPPORTED = ("audio", "functions", "function_call", "prediction", "web_search_options")

# -- requests ------------------------------------------------------------------------------------


def _fail(message: str, param: str) -> InvalidRequestError:
    return InvalidRequestError(f"tgi: {message}", param=param)


def _grammar(fmt: dict[str, Any], has_tools: bool) -> dict[str, Any] | None:
    """OpenAI's ``response_format`` -> TGI's grammar ``{"type": "json", "value": schema}``."""
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
    else:  # json_object: with a schema as llama.cpp ("schema") or TGI ("value") spell it
        schema = fmt.get("schema", fmt.get("value"))
    if not isinstance(schema, dict):
        raise _fail(
            "TGI constrains JSON output with a JSON schema only: use response_format="
            '{"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}}',
            "response_format",
        )
    if has_tools:
        # TGI: 422 "Tool error: Grammar and tools are mutually exclusive".
        raise _fail("response_format and tools cannot be used together", "response_format")
    return {"type": "json", "value": schema}


def _params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The caller's OpenAI fields, translated to what TGI's ChatRequest accepts."""
    out = dict(params)
    for name in _UNSUPPORTED:
        if out.get(name) is not None:
            raise _fail(f"{name} is not supported by TGI", name)
    if any(m != "text" for m in out.pop("modalities", None) or ()):
        raise _fail("only text output is supported", "modalities")
    if out.pop("n", 1) != 1:
        raise _fail("n > 1 is not supported (TGI returns one choice)", "n")
    bias = out.pop("logit_bias", None)
    if bias:
        raise _fail("logit_bias is accepted by TGI but not applied", "logit_bias")
    # TGI reads presence_penalty as repetition_penalty = presence_penalty + 2.0, so 0 (no
    # penalty in OpenAI's meaning) would become a strong penalty of 2.0.
    presence = out.pop("presence_penalty", None)
    if presence:
        raise _fail(
            "presence_penalty has another meaning on TGI (repetition_penalty = value + 2.0); "
            "pass extra_body={'presence_penalty': ...} to use TGI's meaning",
            "presence_penalty",
        )
    caps = [out.pop(k) for k in ("max_tokens", "max_completion_tokens") if out.get(k)]
    if caps:  # TGI 3 takes either name; older releases only max_tokens. Both: the stricter.
        out["max_tokens"] = min(caps)
    top_p = out.get("top_p")
    if top_p is not None and top_p >= 1:
        del out["top_p"]  # TGI requires top_p < 1; 1.0 (no filtering) is TGI's default
    elif top_p is not None and top_p <= 0:
        del out["top_p"]  # only the most likely token: that is greedy decoding
        out["temperature"] = 0
    if isinstance(out.get("stop"), str):
        out["stop"] = [out["stop"]]  # TGI takes a list only
    fmt = out.pop("response_format", None)
    if fmt is not None:
        grammar = _grammar(fmt, bool(out.get("tools")))
        if grammar is not None:
            out["response_format"] = grammar
    return out


def _message(message: dict[str, Any]) -> dict[str, Any]:
    role = message.get("role")
    if role == "developer":
        # Chat templates know system, user, assistant and tool; developer is OpenAI's system.
        return {**message, "role": "system"}
    if role == "assistant" and message.get("content") is None and not message.get("tool_calls"):
        return {**message, "content": ""}  # TGI's content is a string or a list, never null
    return message


def build_chat(spec: BackendSpec, request: ChatRequest, model: str) -> HTTPRequest:
    """``POST /v1/chat/completions`` for TGI (raises ``InvalidRequestError`` for what it lacks).

    The body's ``model`` is ``"tgi"`` (the served model) unless the call named a model and the
    URL did not pin one: TGI reads that name as a LoRA adapter id (unknown ids get the base
    model). ``extra_body`` is merged last, unchanged, for TGI's own fields.
    """
    per_call = spec.model is None and request.model is not None
    messages = [_message(m) for m in request.messages]
    tgi_request = dataclasses.replace(request, messages=messages, params=_params(request.params))
    return openai_compat.build_chat(spec, tgi_request, model if per_call else SERVED_MODEL)


def _root(spec: BackendSpec) -> str:
    return spec.base_url.removesuffix("/v1")


def build_models(spec: BackendSpec) -> HTTPRequest:
    """``GET /info``: the served model id and its token limits (every TGI version has it)."""
    http = openai_compat.build_models(spec)
    http.url = _root(spec) + "/info"
    return http


def parse_models(spec: BackendSpec, body: bytes) -> ModelList:
    """``/info`` -> one :class:`Model` with TGI's limits as extra fields.

    ``max_model_len`` (vLLM's name) is ``max_total_tokens``: prompt plus completion;
    ``max_input_tokens`` bounds the prompt alone.
    """
    info = _json_or_none(body)
    if not isinstance(info, dict) or not isinstance(info.get("model_id"), str):
        raise ProtocolError("malformed /info answer: no model_id", backend=spec.name)
    extra = {k: info[k] for k in ("max_input_tokens", "max_total_tokens") if k in info}
    if "max_total_tokens" in extra:
        extra["max_model_len"] = extra["max_total_tokens"]
    model = Model(id=info["model_id"], owned_by=info.get("router") or "tgi", **extra)
    return ModelList(object="list", data=[model])


# -- errors --------------------------------------------------------------------------------------

# Validation messages of TGI's router (validation.rs) that mean "does not fit the context".
_CONTEXT_MARKERS = ("`inputs` must have less than", "`max_new_tokens` must be <=")

# Error types (infer/mod.rs InferError::error_type) and what they are, whatever the status.
_TYPE_CLASS: dict[str, type[StatusError]] = {
    "overloaded": RateLimitError,
    "generation": ServerError,
    "incomplete_generation": ServerError,
    "incomplete_generation_stream": ServerError,
}


def map_error(
    spec: BackendSpec, status: int, headers: Mapping[str, str], body: bytes
) -> StatusError:
    """TGI's error statuses and bodies -> the typed error tree.

    422 (validation, template, tools) and axum's plain-text 400/415/422 rejections are bad
    requests, never retried; over-long prompts are :class:`ContextLengthError`; 424 (the model
    failed during generation) is a :class:`ServerError`; 429 (overloaded) a
    :class:`RateLimitError`.
    """
    error = openai_compat.map_error(spec, status, headers, body)
    cls: type[StatusError] = type(error)
    typed = _TYPE_CLASS.get(error.error_type or "")
    if typed is not None:
        cls = typed
    elif status == 424:
        cls = ServerError
    elif status == 415:
        cls = BadRequestError
    elif isinstance(error, BadRequestError) and any(m in error.message for m in _CONTEXT_MARKERS):
        cls = ContextLengthError
    if cls is type(error):
        return error
    return cls(
        error.message.removeprefix(f"HTTP {status}: "),
        backend=error.backend,
        status_code=status,
        body=error.body,
        retry_after=error.retry_after,
        request_id=error.request_id,
        error_type=error.error_type,
        retryable=error.should_retry,
        should_retry=error.should_retry,
    )


# A mid-stream error event always says http_status_code 422 (infer/mod.rs into_openai_event);
# its message, InferError's Display, tells which error it was, and so which status TGI gives it
# outside a stream.
_EVENT_STATUS = (
    ("Request failed during generation", 424, "generation"),
    ("Model is overloaded", 429, "overloaded"),
    ("Incomplete generation", 500, "incomplete_generation"),
)


def _error_in(spec: BackendSpec, data: Any) -> StatusError | None:
    """The typed error for an error object inside a 200 body or stream, else ``None``."""
    error = data.get("error") if isinstance(data, dict) else None
    if not error:
        return None
    error_type: str | None
    if isinstance(error, dict):
        message = str(error.get("message") or error)
        code = error.get("http_status_code") or error.get("code")
        status = code if isinstance(code, int) and 400 <= code <= 599 else 500
        error_type = None
        for prefix, prefix_status, prefix_type in _EVENT_STATUS:
            if message.startswith(prefix):
                status, error_type = prefix_status, prefix_type
                break
    else:  # the native routes' {"error": str, "error_type": str}
        message, error_type = str(error), str(data.get("error_type") or "") or None
        status = {"generation": 424, "overloaded": 429, "validation": 422}.get(
            error_type or "", 500
        )
        if error_type and error_type.endswith(("_error", "_variable")):
            status = 422  # template_error, tool_error, missing_template_variable
    fields = (
        {"error": message} if error_type is None else {"error": message, "error_type": error_type}
    )
    body = pydantic_core.to_json(fields)
    return map_error(spec, status, {}, body)


# -- responses -----------------------------------------------------------------------------------

# TGI's finish reasons -> OpenAI's ("stop_sequence": a stop string matched; older releases also
# sent the native "eos_token").
_FINISH = {"stop_sequence": "stop", "eos_token": "stop"}


def _new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


def _json_or_none(raw: bytes) -> Any:
    try:
        return pydantic_core.from_json(raw)
    except ValueError:
        return None


def _first_error(exc: pydantic.ValidationError) -> str:
    err = exc.errors(include_url=False, include_input=False)[0]
    return f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"


def _normalize(data: dict[str, Any], obj: str) -> dict[str, Any]:
    """Older TGI shapes -> OpenAI's: ``object`` "text_completion", a delta's single tool call
    object instead of a list, ``arguments`` as a JSON object instead of JSON text."""
    data = {**data, "object": obj}
    if not isinstance(data.get("choices"), list):
        return data  # not repairable: validation says what is wrong
    choices = []
    for choice in data["choices"]:
        if not isinstance(choice, dict):
            choices.append(choice)
            continue
        part = "delta" if "delta" in choice else "message"
        inner = choice.get(part)
        if isinstance(inner, dict) and inner.get("tool_calls") is not None:
            calls = inner["tool_calls"]
            calls = [calls] if isinstance(calls, dict) else calls
            fixed = []
            for call in calls if isinstance(calls, list) else ():
                fn = call.get("function") if isinstance(call, dict) else None
                if isinstance(fn, dict) and not isinstance(fn.get("arguments"), str | None):
                    call = {**call, "function": {**fn, "arguments": _dumps(fn["arguments"])}}
                fixed.append(call)
            inner = {**inner, "tool_calls": fixed}
        choices.append({**choice, part: inner})
    data["choices"] = choices
    return data


def _dumps(value: Any) -> str:
    return pydantic_core.to_json(value).decode()


def parse_chat(spec: BackendSpec, body: bytes) -> ChatCompletion:
    """A 200 body -> :class:`ChatCompletion` with an id, OpenAI finish reasons, the model id."""
    try:
        completion = ChatCompletion.model_validate_json(body)
    except pydantic.ValidationError as exc:
        data = _json_or_none(body)
        error = _error_in(spec, data)
        if error is not None:
            raise error from None
        try:
            if not isinstance(data, dict):
                raise exc
            completion = ChatCompletion.model_validate(_normalize(data, "chat.completion"))
        except pydantic.ValidationError as invalid:  # the first error, or the repaired one's
            raise ProtocolError(
                f"response is not a chat completion: {_first_error(invalid)}", backend=spec.name
            ) from None
    if not completion.id:
        completion.id = _new_id("chatcmpl-")
    if completion.model in (SERVED_MODEL, "") and spec.model:
        completion.model = spec.model  # some TGI releases echo the request's "tgi"
    for choice in completion.choices:
        reason = _FINISH.get(choice.finish_reason or "", choice.finish_reason)
        calls = choice.message.tool_calls
        if calls:
            for call in calls:
                if not call.id:
                    call.id = _new_id("call_")
            if reason == "stop":
                reason = "tool_calls"  # TGI never says tool_calls (tgi.md section 4)
        if reason != choice.finish_reason:
            choice.finish_reason = reason
    return completion


class ChunkDecoder(openai_compat.ChunkDecoder):
    """TGI's SSE chat stream -> OpenAI chunks (``data:`` without a space, ``:`` keep-alives).

    Every chunk gets one generated ``chatcmpl-`` id (TGI sends ``""``), tool calls get ids on
    their first fragment, finish reasons are OpenAI's, and an ``{"error": ...}`` event raises
    the error TGI would have answered with outside a stream (424, 429, 500 or 422).
    """

    __slots__ = ("_calls", "_id", "_tools")

    def __init__(self, spec: BackendSpec) -> None:
        super().__init__(spec)
        self._id = _new_id("chatcmpl-")
        self._calls: set[tuple[int, int]] = set()  # (choice, tool call) indexes seen
        self._tools: set[int] = set()  # choices that called a tool

    def parse(self, event: bytes) -> ChatCompletionChunk | None:
        """One event as a chunk; ``None`` for ``[DONE]`` (and for anything after it)."""
        if self._ended(event):
            return None
        try:
            chunk = ChatCompletionChunk.model_validate_json(event)
        except pydantic.ValidationError:
            chunk = self._slow_parse(event)
        if not chunk.id:
            chunk.id = self._id
        if chunk.model in (SERVED_MODEL, "") and self._spec.model:
            chunk.model = self._spec.model  # some TGI releases echo the request's "tgi"
        for choice in chunk.choices:
            if choice.delta.tool_calls:
                self._tools.add(choice.index)
                for call in choice.delta.tool_calls:
                    key = (choice.index, call.index)
                    if key not in self._calls:
                        self._calls.add(key)
                        call.id = call.id or _new_id("call_")
                    elif call.id == "":
                        call.id = None
            reason = choice.finish_reason
            if reason is not None:
                reason = _FINISH.get(reason, reason)
                if reason == "stop" and choice.index in self._tools:
                    reason = "tool_calls"
                if reason != choice.finish_reason:
                    choice.finish_reason = reason
                if choice.index == 0:
                    self._finished = True
        return chunk

    def _slow_parse(self, event: bytes) -> ChatCompletionChunk:
        data = _json_or_none(event)
        if data is None:
            raise ProtocolError(f"malformed stream event: {event[:200]!r}", backend=self._spec.name)
        error = _error_in(self._spec, data)
        if error is not None:
            raise error
        try:
            if not isinstance(data, dict):
                raise ValueError("not an object")
            return ChatCompletionChunk.model_validate(_normalize(data, "chat.completion.chunk"))
        except (pydantic.ValidationError, ValueError) as exc:
            detail = _first_error(exc) if isinstance(exc, pydantic.ValidationError) else str(exc)
            raise ProtocolError(
                f"stream event is not a chunk: {detail}", backend=self._spec.name
            ) from None


BACKEND = BackendDeclaration(
    "tgi",
    description="Text Generation Inference (Messages API, TGI's rules and errors)",
    default_port=8080,
    key_env="HF_TOKEN",
    capabilities=CAPABILITIES,
)

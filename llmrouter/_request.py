"""Validate a ``chat.completions.create`` call before anything is sent (pure).

The result, :class:`ChatRequest`, is what every backend codec reads: the OpenAI body fields that
the caller set (nothing else, so servers keep their own defaults), plus the transport options
(``timeout``, ``extra_headers``) that never go into the body.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from typing_extensions import TypedDict

from llmrouter.errors import InvalidRequestError

__all__ = ["BODY_PARAMS", "ChatRequest", "CreateParams", "ParseParams", "build_request"]

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})

# Every body field of the OpenAI chat API (openai-chat.md section 1), less model/messages/stream.
BODY_PARAMS = frozenset(
    {
        "audio",
        "frequency_penalty",
        "function_call",
        "functions",
        "logit_bias",
        "logprobs",
        "max_completion_tokens",
        "max_tokens",
        "metadata",
        "modalities",
        "n",
        "parallel_tool_calls",
        "prediction",
        "presence_penalty",
        "prompt_cache_key",
        "reasoning_effort",
        "response_format",
        "safety_identifier",
        "seed",
        "service_tier",
        "stop",
        "store",
        "stream_options",
        "temperature",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "user",
        "verbosity",
        "web_search_options",
    }
)

_CALL_OPTIONS = frozenset({"model", "extra_body", "extra_headers", "extra_query", "timeout"})
_TEXT_PART_ROLES = frozenset({"system", "developer", "tool"})


class ParseParams(TypedDict, total=False):
    """Keyword arguments of ``chat.completions.parse`` besides ``messages`` and
    ``response_format``; :class:`CreateParams` adds ``response_format``.

    The names and meanings are the OpenAI API's; ``extra_body`` carries engine-specific fields,
    ``extra_headers`` extra request headers, ``timeout`` a total deadline in seconds.
    """

    model: str | None
    temperature: float | None
    top_p: float | None
    max_tokens: int | None
    max_completion_tokens: int | None
    stop: str | list[str] | None
    seed: int | None
    n: int | None
    tools: list[dict[str, Any]] | None
    tool_choice: str | dict[str, Any] | None
    parallel_tool_calls: bool | None
    user: str | None
    logprobs: bool | None
    top_logprobs: int | None
    frequency_penalty: float | None
    presence_penalty: float | None
    logit_bias: dict[str, int] | None
    stream_options: dict[str, Any] | None
    reasoning_effort: str | None
    metadata: dict[str, str] | None
    store: bool | None
    service_tier: str | None
    audio: dict[str, Any] | None
    modalities: list[str] | None
    prediction: dict[str, Any] | None
    prompt_cache_key: str | None
    safety_identifier: str | None
    verbosity: str | None
    web_search_options: dict[str, Any] | None
    functions: list[dict[str, Any]] | None
    function_call: str | dict[str, Any] | None
    extra_body: Mapping[str, Any] | None
    extra_headers: Mapping[str, str] | None
    extra_query: Mapping[str, object] | None
    timeout: float | Any | None


class CreateParams(ParseParams, total=False):
    """Keyword arguments of ``chat.completions.create`` besides ``messages`` and ``stream``."""

    response_format: dict[str, Any] | None


@dataclass(slots=True)
class ChatRequest:
    """A validated chat request.

    Attributes:
        messages: the messages, as plain dicts.
        model: the model the caller named, if any.
        stream: whether the caller asked for a stream.
        params: the other OpenAI body fields the caller set.
        extra_body: engine-specific fields merged into the body as given.
        extra_headers: headers added to this request.
        extra_query: query parameters added to this request's URL (HTTP backends).
        timeout: a per-call total deadline in seconds, if given.
        connect_timeout: a per-attempt connect limit, if given (an ``httpx.Timeout``'s).
        read_timeout: a per-attempt limit on silence while reading, if given.
        max_retries: retries per backend for this call (``with_options(max_retries=)``).
    """

    messages: list[dict[str, Any]]
    model: str | None = None
    stream: bool = False
    params: dict[str, Any] = field(default_factory=dict)
    extra_body: dict[str, Any] = field(default_factory=dict)
    extra_headers: dict[str, str] = field(default_factory=dict)
    extra_query: dict[str, str] = field(default_factory=dict)
    timeout: float | None = None
    connect_timeout: float | None = None
    read_timeout: float | None = None
    max_retries: int | None = None


def _fail(message: str, param: str) -> InvalidRequestError:
    return InvalidRequestError(message, param=param)


def _as_dict(message: Any, where: str) -> dict[str, Any]:
    if isinstance(message, dict):
        return message
    dump = getattr(message, "model_dump", None)
    if callable(dump):
        result = dump(exclude_none=True)
        if isinstance(result, dict):
            return result
    raise _fail(
        f"{where}: expected a dict with 'role' and 'content', got {type(message).__name__}", where
    )


def _check_content(role: str, content: Any, where: str) -> None:
    if content is None:
        if role == "assistant":
            return
        raise _fail(f"{where}.content: required for role {role!r}", f"{where}.content")
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise _fail(
            f"{where}.content: expected a string or a list of content parts, "
            f"got {type(content).__name__}",
            f"{where}.content",
        )
    for j, part in enumerate(content):
        part_where = f"{where}.content[{j}]"
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise _fail(f"{part_where}: expected a dict with a 'type'", part_where)
        if part["type"] == "text":
            if not isinstance(part.get("text"), str):
                raise _fail(f"{part_where}.text: expected a string", f"{part_where}.text")
        elif role in _TEXT_PART_ROLES or (role == "assistant" and part["type"] != "refusal"):
            raise _fail(
                f"{part_where}: role {role!r} takes only text parts, got {part['type']!r}",
                part_where,
            )


def _check_messages(messages: Any) -> list[dict[str, Any]]:
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Iterable):
        raise _fail("messages: expected a list of message dicts", "messages")
    result = [_as_dict(m, f"messages[{i}]") for i, m in enumerate(messages)]
    if not result:
        raise _fail("messages: must contain at least one message", "messages")
    for i, message in enumerate(result):
        where = f"messages[{i}]"
        role = message.get("role")
        if role not in ROLES:
            raise _fail(
                f"{where}.role: expected one of {', '.join(sorted(ROLES))}, got {role!r}",
                f"{where}.role",
            )
        if role == "assistant" and message.get("tool_calls"):
            _check_tool_calls(message["tool_calls"], where)
        else:
            _check_content(role, message.get("content"), where)
        if role == "tool" and not isinstance(message.get("tool_call_id"), str):
            raise _fail(
                f"{where}.tool_call_id: required (a string) for role 'tool'",
                f"{where}.tool_call_id",
            )
    return result


def _check_tool_calls(calls: Any, where: str) -> None:
    if not isinstance(calls, list):
        raise _fail(f"{where}.tool_calls: expected a list", f"{where}.tool_calls")
    for j, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise _fail(
                f"{where}.tool_calls[{j}].function.name: expected a string",
                f"{where}.tool_calls[{j}]",
            )
        if not isinstance(fn.get("arguments", ""), str):
            raise _fail(
                f"{where}.tool_calls[{j}].function.arguments: expected a JSON string",
                f"{where}.tool_calls[{j}]",
            )


def _number(name: str, value: Any, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _fail(f"{name}: expected a number, got {value!r}", name)
    if not low <= value <= high:
        raise _fail(f"{name}: expected a value in [{low:g}, {high:g}], got {value!r}", name)


def _integer(name: str, value: Any, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(f"{name}: expected an integer, got {value!r}", name)
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise _fail(f"{name}: expected an integer {bound}, got {value}", name)


def _check_stop(name: str, stop: Any) -> None:
    if not isinstance(stop, str) and (
        not isinstance(stop, list) or not all(isinstance(s, str) for s in stop)
    ):
        raise _fail("stop: expected a string or a list of strings", "stop")


def _check_tools(name: str, tools: Any) -> None:
    if not isinstance(tools, list):
        raise _fail("tools: expected a list of tool definitions", "tools")
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise _fail(f"tools[{i}].function.name: expected a string", f"tools[{i}]")
        parameters = fn.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            hint = " (json.loads it first)" if isinstance(parameters, str | bytes) else ""
            raise _fail(
                f"tools[{i}].function.parameters: expected a JSON Schema object (a dict), got "
                f"{type(parameters).__name__}{hint}",
                f"tools[{i}].function.parameters",
            )


_TOOL_CHOICE_FORMS = (
    "'none', 'auto', 'required' or {'type': 'function', 'function': {'name': NAME}} naming "
    "one of tools"
)


def _check_tool_choice(choice: Any, tools: Any) -> None:
    """``tool_choice`` in one of OpenAI's forms, naming only declared tools (openai-chat.md).

    The openai SDK's ``allowed_tools`` form is accepted too; a bare function name (TGI's own
    shorthand) and custom-tool choices are not OpenAI chat forms every backend reads.
    """
    declared = {
        t["function"]["name"] for t in tools or () if isinstance(t, dict) and "function" in t
    }
    if choice in ("none", "auto"):
        return
    if choice == "required":
        if not declared:
            raise _fail("tool_choice 'required': no tools given to call", "tool_choice")
        return
    names: list[Any] = []
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "function":
        fn = choice.get("function")
        names = [fn.get("name") if isinstance(fn, dict) else None]
    elif kind == "allowed_tools":
        allowed = choice.get("allowed_tools")
        listed = allowed.get("tools") if isinstance(allowed, dict) else None
        if not isinstance(allowed, dict) or allowed.get("mode") not in ("auto", "required"):
            raise _fail(
                "tool_choice.allowed_tools.mode: expected 'auto' or 'required'", "tool_choice"
            )
        if not isinstance(listed, list) or not listed:
            raise _fail("tool_choice.allowed_tools.tools: expected a list of tools", "tool_choice")
        for item in listed:
            fn = item.get("function") if isinstance(item, dict) else None
            names.append(fn.get("name") if isinstance(fn, dict) else None)
    else:
        shown = repr(choice) if len(repr(choice)) <= 80 else type(choice).__name__
        hint = ""
        if isinstance(choice, str) and choice in declared:
            hint = (
                f"; to force that tool: {{'type': 'function', 'function': {{'name': {choice!r}}}}}"
            )
        raise _fail(f"tool_choice: expected {_TOOL_CHOICE_FORMS}, got {shown}{hint}", "tool_choice")
    for name in names:
        if not isinstance(name, str):
            raise _fail(f"tool_choice: expected {_TOOL_CHOICE_FORMS}", "tool_choice")
        if name not in declared:
            known = ", ".join(sorted(declared)) or "none"
            raise _fail(
                f"tool_choice names {name!r}, which is not among the tools (declared: {known})",
                "tool_choice",
            )


def _check_response_format(name: str, fmt: Any) -> None:
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind not in ("text", "json_object", "json_schema"):
        raise _fail(
            "response_format.type: expected 'text', 'json_object' or 'json_schema'",
            "response_format",
        )
    if kind == "json_schema" and not isinstance(fmt.get("json_schema"), dict):
        raise _fail(
            "response_format.json_schema: required for type 'json_schema'",
            "response_format.json_schema",
        )


# One check per parameter, run only for the parameters a call sets (the hot path).
_CHECKS: dict[str, Callable[[str, Any], None]] = {
    "temperature": lambda n, v: _number(n, v, 0.0, 2.0),
    "top_p": lambda n, v: _number(n, v, 0.0, 1.0),
    "frequency_penalty": lambda n, v: _number(n, v, -2.0, 2.0),
    "presence_penalty": lambda n, v: _number(n, v, -2.0, 2.0),
    "max_tokens": lambda n, v: _integer(n, v, 1),
    "max_completion_tokens": lambda n, v: _integer(n, v, 1),
    "n": lambda n, v: _integer(n, v, 1, 128),
    "top_logprobs": lambda n, v: _integer(n, v, 0, 20),
    "seed": lambda n, v: _integer(n, v, -(2**63)),
    "stop": _check_stop,
    "tools": _check_tools,
    "response_format": _check_response_format,
}


def _check_params(params: Mapping[str, Any]) -> None:
    for name, value in params.items():
        check = _CHECKS.get(name)
        if check is not None:
            check(name, value)
    if "top_logprobs" in params and not params.get("logprobs"):
        raise _fail("top_logprobs: requires logprobs=True", "top_logprobs")
    if "tool_choice" in params:
        _check_tool_choice(params["tool_choice"], params.get("tools"))


def build_request(messages: Any, stream: Any, kwargs: Mapping[str, Any]) -> ChatRequest:
    """Validate one ``create`` call; ``kwargs`` are its keyword arguments but messages/stream."""
    params: dict[str, Any] = {}
    unknown = []
    for key, value in kwargs.items():
        if key in BODY_PARAMS:
            if value is not None:
                params[key] = value
        elif key not in _CALL_OPTIONS:
            unknown.append(key)
    if unknown:
        names = ", ".join(sorted(unknown))
        raise InvalidRequestError(
            f"unknown keyword argument(s): {names}; engine-specific fields go in extra_body",
            param=sorted(unknown)[0],
        )
    if not isinstance(stream, bool):
        raise _fail(f"stream: expected True or False, got {stream!r}", "stream")
    model = kwargs.get("model")
    if model is not None and (not isinstance(model, str) or not model):
        raise _fail(f"model: expected a non-empty string, got {model!r}", "model")
    if params:
        _check_params(params)
    extra_body = kwargs.get("extra_body")
    if extra_body is not None and not isinstance(extra_body, Mapping):
        raise _fail("extra_body: expected a dict", "extra_body")
    extra_headers = kwargs.get("extra_headers")
    if extra_headers is not None and not isinstance(extra_headers, Mapping):
        raise _fail("extra_headers: expected a dict", "extra_headers")
    total, connect, read = split_timeout(kwargs.get("timeout"), _fail)
    return ChatRequest(
        messages=_check_messages(messages),
        model=model,
        stream=stream,
        params=params,
        extra_body=dict(extra_body) if extra_body else {},
        extra_headers=dict(extra_headers) if extra_headers else {},
        extra_query=check_query(kwargs.get("extra_query"), _fail, "extra_query"),
        timeout=total,
        connect_timeout=connect,
        read_timeout=read,
    )


def _seconds(value: object, where: str, fail: Callable[[str, str], Exception]) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise fail(f"{where}: expected a positive number of seconds, got {value!r}", "timeout")
    if value == float("inf"):
        return None
    return float(value)


def split_timeout(
    value: object, fail: Callable[[str, str], Exception]
) -> tuple[float | None, float | None, float | None]:
    """``timeout=`` as the openai SDK takes it, as ``(total, connect, read)`` seconds.

    A number is the whole call's deadline, retries and failover included. An ``httpx.Timeout``
    (anything with ``connect`` and ``read`` attributes: httpx's, httpx2's) limits each attempt:
    ``connect`` the connection, ``read`` the silence while reading; its ``write`` and ``pool``
    have no counterpart (a request body is written at once; the pool does not queue), and the
    call's deadline stays the client's. ``docs/migrating.md`` has the table."""
    if value is None or isinstance(value, (int, float)):
        return _seconds(value, "timeout", fail), None, None
    if hasattr(value, "connect") and hasattr(value, "read"):
        connect = _seconds(value.connect, "timeout.connect", fail)
        read = _seconds(value.read, "timeout.read", fail)
        return None, connect, read
    raise fail(
        f"timeout: expected seconds or an httpx.Timeout, got {type(value).__name__}", "timeout"
    )


def check_query(value: object, fail: Callable[[str, str], Exception], where: str) -> dict[str, str]:
    """Query parameters as strings (the openai SDK's ``extra_query`` / ``default_query``)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise fail(f"{where}: expected a dict of query parameters", where)
    query: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not key:
            raise fail(f"{where}: parameter names must be non-empty strings", where)
        if isinstance(item, bool):
            query[key] = "true" if item else "false"
        elif isinstance(item, (str, int, float)):
            query[key] = str(item)
        else:
            raise fail(
                f"{where}[{key!r}]: expected a string or number, got {type(item).__name__}", where
            )
    return query

"""Codec for Ollama's native chat API (``ollama://host:11434``): ``POST /api/chat``, NDJSON.

Sans-IO, like every codec: it builds :class:`HTTPRequest` values and turns Ollama's bytes into
OpenAI-shaped models; the drivers in ``_async``/``_sync`` do the sending. Protocol facts (field
names, defaults, error bodies): ``shared/protocols/ollama.md``. The differences it bridges:

* sampling knobs live in ``options`` (``max_tokens`` is ``options.num_predict``);
* message content is a plain string plus an ``images`` list of raw base64;
* tool-call ``arguments`` are JSON *objects*, tool calls carry no ids (we make stable ones) and
  tool results name their tool (``tool_name``) rather than a call id;
* a stream is NDJSON whose last line says ``done: true`` and carries the token counts, and an
  error after the first line arrives as an ``{"error": ...}`` line inside the 200 response.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import pydantic_core

from llmrouter._decoders import NDJSONDecoder
from llmrouter._http import HTTPRequest
from llmrouter._request import ChatRequest
from llmrouter._status import error_from_status
from llmrouter.backends import Capabilities, openai_compat
from llmrouter.backends.declaration import BackendDeclaration
from llmrouter.config import BackendSpec
from llmrouter.errors import (
    BackendConnectionError,
    BadRequestError,
    ConfigError,
    InvalidRequestError,
    NotFoundError,
    ProtocolError,
    StatusError,
)
from llmrouter.types import ChatCompletion, ChatCompletionChunk, Model, ModelList

__all__ = [
    "CAPABILITIES",
    "ChunkDecoder",
    "build_chat",
    "build_health",
    "build_models",
    "build_options",
    "map_error",
    "parse_chat",
    "parse_models",
    "tool_call_id",
    "translate_messages",
]

# /api/chat names a pulled model or fails (ollama.md): with no model known the driver says so
# before sending (``AsyncHTTPBackend._model``).
MODEL_REQUIRED = True

CAPABILITIES = Capabilities(
    tools=True,
    tool_choice=False,  # only "auto" and "none": Ollama cannot force a call
    json_object=True,
    json_schema=True,
    stream_usage=True,
    seed=True,
    n=False,
    logprobs=True,
    stop=True,
)

# OpenAI body field -> Ollama ``options`` key (ollama.md 1.2).
_OPTION_NAMES = {
    "temperature": "temperature",
    "top_p": "top_p",
    "seed": "seed",
    "frequency_penalty": "frequency_penalty",
    "presence_penalty": "presence_penalty",
}

# Fields that change nothing about the generated text (bookkeeping for OpenAI's platform, or
# handled by construction: usage always arrives on the last chunk).
_IGNORED = frozenset(
    {
        "user",
        "metadata",
        "store",
        "service_tier",
        "prompt_cache_key",
        "safety_identifier",
        "parallel_tool_calls",
        "stream_options",
    }
)

_UNSUPPORTED = {
    "logit_bias": "Ollama has no logit bias",
    "audio": "Ollama answers in text only",
    "prediction": "Ollama has no predicted outputs",
    "web_search_options": "Ollama has no web search",
    "functions": "use tools= instead (Ollama speaks the tools API only)",
    "function_call": "use tool_choice= instead (Ollama speaks the tools API only)",
    "verbosity": "Ollama has no verbosity control",
}

# OpenAI reasoning_effort -> Ollama ``think`` (ollama.md 1: bool or low/medium/high/max).
_THINK: dict[str, bool | str] = {
    "none": False,
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "xhigh": "max",
}

# Every OpenAI body field this codec reads (the rest of BODY_PARAMS is _IGNORED).
_HANDLED = frozenset(
    {
        *_OPTION_NAMES,
        *_UNSUPPORTED,
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "n",
        "modalities",
        "tools",
        "tool_choice",
        "response_format",
        "reasoning_effort",
        "logprobs",
        "top_logprobs",
    }
)


def _fail(message: str, param: str) -> InvalidRequestError:
    return InvalidRequestError(f"ollama: {message}", param=param)


def _headers(spec: BackendSpec, accept: str, request: ChatRequest | None) -> dict[str, str]:
    # Ollama ignores auth; a key (Bearer) only matters to a proxy in front of it.
    base = {"Accept": accept}
    if request is not None:
        base["Content-Type"] = "application/json"
    return openai_compat.request_headers(spec, base, request)


# ---------------------------------------------------------------------------------------------
# Requests


def tool_call_id(index: int, name: str, arguments: Any) -> str:
    """A stable id for a tool call Ollama sent without one: ``call_<index>_<hash>``.

    The same call (position, name, arguments) always gets the same id, streamed or not, so the
    caller's tool result can be matched back to its call in the next request.
    """
    canonical = json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256(f"{name}\0{canonical}".encode()).hexdigest()[:12]
    return f"call_{index}_{digest}"


def _image(part: dict[str, Any], where: str) -> str:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        raise _fail(f"{where}.image_url.url: expected a string", where)
    head, comma, data = url.partition(",")
    if not (head.startswith("data:") and head.endswith(";base64") and comma):
        raise _fail(
            f"{where}: Ollama takes images inline only; pass a base64 data: URI "
            "(data:image/png;base64,...), not a link",
            where,
        )
    return "".join(data.split())


def _content(content: Any, where: str) -> tuple[str, list[str]]:
    """OpenAI content (a string or parts) -> Ollama's string and base64 images."""
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    texts: list[str] = []
    images: list[str] = []
    for j, part in enumerate(content):
        kind = part.get("type")
        if kind == "text":
            texts.append(part["text"])
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            texts.append(part["refusal"])
        elif kind == "image_url":
            images.append(_image(part, f"{where}.content[{j}]"))
        else:
            raise _fail(
                f"{where}.content[{j}]: Ollama takes text and image parts, not {kind!r}",
                f"{where}.content[{j}]",
            )
    # The native API has no parts: text parts become one string, a newline between them.
    return "\n".join(texts), images


def _arguments(raw: Any, where: str) -> dict[str, Any]:
    """OpenAI's JSON-text arguments -> the object Ollama expects (ollama.md 1, ToolCall)."""
    if raw is None or raw == "":
        return {}
    if isinstance(raw, dict):
        return raw
    try:
        value = json.loads(raw)
    except (TypeError, ValueError):
        raise _fail(f"{where}.function.arguments: not valid JSON", where) from None
    if not isinstance(value, dict):
        raise _fail(f"{where}.function.arguments: Ollama needs a JSON object", where)
    return value


def _assistant_calls(
    message: dict[str, Any], where: str, names: dict[str, str]
) -> list[dict[str, Any]]:
    calls = message.get("tool_calls") or []
    legacy = message.get("function_call")
    if not calls and isinstance(legacy, dict):
        calls = [{"function": legacy}]
    result = []
    for j, call in enumerate(calls):
        fn = call["function"]
        call_where = f"{where}.tool_calls[{j}]"
        out: dict[str, Any] = {
            "function": {
                "index": j,
                "name": fn["name"],
                "arguments": _arguments(fn.get("arguments"), call_where),
            }
        }
        call_id = call.get("id")
        if isinstance(call_id, str) and call_id:
            out["id"] = call_id
            names[call_id] = fn["name"]
        result.append(out)
    return result


def translate_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI messages -> Ollama messages (content strings, images, tool calls, tool names)."""
    names: dict[str, str] = {}  # tool call id -> function name, for the tool results after it
    result: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        role = message["role"]
        text, images = _content(message.get("content"), where)
        out: dict[str, Any] = {"role": role, "content": text}
        if role == "developer":
            out["role"] = "system"  # Ollama's chat templates know system, not developer
        elif role == "assistant":
            calls = _assistant_calls(message, where, names)
            if calls:
                out["tool_calls"] = calls
            thinking = message.get("reasoning_content") or message.get("reasoning")
            if isinstance(thinking, str) and thinking:
                out["thinking"] = thinking
        elif role in ("tool", "function"):
            out["role"] = "tool"
            call_id = message.get("tool_call_id")
            if isinstance(call_id, str):
                out["tool_call_id"] = call_id
            name = names.get(call_id) if isinstance(call_id, str) else None
            name = name or message.get("name")
            if isinstance(name, str) and name:
                out["tool_name"] = name
        if images:
            out["images"] = images
        result.append(out)
    return result


def build_options(params: Mapping[str, Any]) -> dict[str, Any]:
    """The ``options`` object for the OpenAI sampling fields in ``params``."""
    options: dict[str, Any] = {}
    for name, key in _OPTION_NAMES.items():
        if params.get(name) is not None:
            options[key] = params[name]
    limit = params.get("max_completion_tokens", params.get("max_tokens"))
    if limit is not None:
        options["num_predict"] = limit
    stop = params.get("stop")
    if stop is not None:
        options["stop"] = [stop] if isinstance(stop, str) else list(stop)
    return options


def _check_params(params: Mapping[str, Any]) -> None:
    for name, why in _UNSUPPORTED.items():
        if params.get(name) is not None:
            raise _fail(f"{name} is not supported: {why}", name)
    if params.get("n", 1) != 1:
        raise _fail("n > 1 is not supported: Ollama returns one choice per request", "n")
    modalities = params.get("modalities")
    if modalities is not None and list(modalities) != ["text"]:
        raise _fail("modalities: Ollama answers in text only", "modalities")
    choice = params.get("tool_choice")
    if choice is not None and choice not in ("auto", "none"):
        raise _fail(
            "tool_choice: Ollama cannot force a tool call; use 'auto' or 'none'", "tool_choice"
        )
    effort = params.get("reasoning_effort")
    if effort is not None and (not isinstance(effort, str) or effort not in _THINK):
        raise _fail(
            f"reasoning_effort={effort!r}: expected one of {', '.join(_THINK)}",
            "reasoning_effort",
        )
    unknown = set(params) - _IGNORED - set(_HANDLED)
    if unknown:
        first = sorted(unknown)[0]
        raise _fail(f"{first} is not supported", first)


def _format(response_format: Any) -> Any:
    """OpenAI ``response_format`` -> Ollama ``format`` (``"json"`` or a schema), or None."""
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        schema = response_format["json_schema"].get("schema")
        return schema if isinstance(schema, dict) else "json"
    return None


def build_chat(spec: BackendSpec, request: ChatRequest, model: str) -> HTTPRequest:
    """The ``POST /api/chat`` request for ``request`` (``stream`` always explicit)."""
    params = request.params
    _check_params(params)
    body: dict[str, Any] = {"model": model, "messages": translate_messages(request.messages)}
    if params.get("tools") and params.get("tool_choice") != "none":
        body["tools"] = params["tools"]
    fmt = _format(params.get("response_format"))
    if fmt is not None:
        body["format"] = fmt
    if params.get("reasoning_effort") is not None:
        body["think"] = _THINK[params["reasoning_effort"]]
    if params.get("logprobs"):
        body["logprobs"] = True
        if params.get("top_logprobs") is not None:
            body["top_logprobs"] = params["top_logprobs"]
    options = build_options(params)
    extra = dict(request.extra_body)
    extra_options = extra.pop("options", None)
    if extra_options is not None:
        if not isinstance(extra_options, Mapping):
            raise _fail("extra_body['options']: expected a dict of Ollama options", "extra_body")
        options.update(extra_options)  # an engine knob named explicitly wins
    if options:
        body["options"] = options
    body.update(extra)  # keep_alive, think, truncate, shift, format, ...
    body["stream"] = request.stream  # the server streams unless told not to (ollama.md 1)
    accept = "application/x-ndjson" if request.stream else "application/json"
    return HTTPRequest(
        method="POST",
        url=spec.base_url + "/api/chat",
        headers=_headers(spec, accept, request),
        body=pydantic_core.to_json(body),
        backend=spec.name,
    )


def build_models(spec: BackendSpec) -> HTTPRequest:
    """The ``GET /api/tags`` request (the models pulled on the server)."""
    return HTTPRequest(
        method="GET",
        url=spec.base_url + "/api/tags",
        headers=_headers(spec, "application/json", None),
        backend=spec.name,
    )


def build_health(spec: BackendSpec) -> HTTPRequest:
    """The liveness probe: ``GET /`` answers ``Ollama is running`` (ollama.md, top)."""
    return HTTPRequest(
        method="GET",
        url=spec.base_url + "/",
        headers=_headers(spec, "text/plain", None),
        backend=spec.name,
    )


# ---------------------------------------------------------------------------------------------
# Errors

_NOT_FOUND = re.compile(r"""model ['"]([^'"]+)['"] not found""")


def map_error(
    spec: BackendSpec, status: int, headers: Mapping[str, str], body: bytes
) -> StatusError:
    """The typed error for a non-2xx answer (bodies are ``{"error": "<message>"}``)."""
    error = error_from_status(status, headers, body, backend=spec.name)
    message = error.message.removeprefix(f"HTTP {status}: ")
    match = _NOT_FOUND.search(message) if status == 404 else None
    if match:
        # The model is not pulled on this server (ollama.md 4): say how to get it.
        hint = f"{message}; run `ollama pull {match.group(1)}` on that server"
        return _rebuild(NotFoundError, error, hint)
    if status >= 500 and message.startswith("option ") and "must be of type" in message:
        # A wrong option type is the request's fault, though Ollama says 500 (ollama.md 1.2):
        # another attempt would fail the same way.
        return _rebuild(BadRequestError, error, message)
    return error


def _rebuild(cls: type[StatusError], error: StatusError, message: str) -> StatusError:
    return cls(
        message,
        backend=error.backend,
        status_code=error.status_code,
        body=error.body,
        retry_after=error.retry_after,
        request_id=error.request_id,
        error_type=error.error_type,
        should_retry=error.should_retry,
    )


def _raise_if_error(spec: BackendSpec, data: dict[str, Any]) -> None:
    error = data.get("error")
    if error is None:
        return
    text = error if isinstance(error, str) else json.dumps(error)
    status = 404 if _NOT_FOUND.search(text) else 500
    raise map_error(spec, status, {}, pydantic_core.to_json({"error": error}))


# ---------------------------------------------------------------------------------------------
# Responses

_FRACTION = re.compile(r"(\.\d{6})\d+")


def _created(created_at: Any) -> int:
    """Unix seconds of an RFC 3339 timestamp (Go writes up to 9 fractional digits)."""
    if isinstance(created_at, str) and created_at:
        text = _FRACTION.sub(r"\1", created_at.strip())
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            return int(datetime.fromisoformat(text).timestamp())
        except ValueError:
            pass
    return int(time.time())


def _load(spec: BackendSpec, raw: bytes, what: str) -> dict[str, Any]:
    try:
        data = pydantic_core.from_json(raw)
    except ValueError:
        raise ProtocolError(f"{what} is not JSON: {raw[:200]!r}", backend=spec.name) from None
    if not isinstance(data, dict):
        raise ProtocolError(f"{what} is not a JSON object: {raw[:200]!r}", backend=spec.name)
    return data


def _message(spec: BackendSpec, data: dict[str, Any]) -> dict[str, Any]:
    message = data.get("message", {})
    if not isinstance(message, dict):
        raise ProtocolError("'message' is not an object", backend=spec.name)
    for key in ("content", "thinking"):
        if message.get(key) is not None and not isinstance(message[key], str):
            raise ProtocolError(f"'message.{key}' is not a string", backend=spec.name)
    return message


def _tool_calls(spec: BackendSpec, calls: Any, start: int) -> list[dict[str, Any]]:
    """Ollama tool calls -> OpenAI ones, numbered from ``start`` (arguments as JSON text)."""
    if not calls:
        return []
    if not isinstance(calls, list):
        raise ProtocolError("'message.tool_calls' is not a list", backend=spec.name)
    result = []
    for offset, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise ProtocolError(f"malformed tool call: {call!r:.200}", backend=spec.name)
        args = fn.get("arguments")
        args = {} if args is None else args
        text = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
        index = start + offset
        given = call.get("id")
        result.append(
            {
                "index": index,
                "id": given
                if isinstance(given, str) and given
                else tool_call_id(index, fn["name"], args),
                "type": "function",
                "function": {"name": fn["name"], "arguments": text},
            }
        )
    return result


def _finish_reason(done_reason: Any, tool_calls: bool) -> str:
    # Ollama says "stop" after tool calls (ollama.md 1.3); "load"/"unload" end a load call.
    if done_reason == "length":
        return "length"
    if tool_calls:
        return "tool_calls"
    if done_reason in (None, "", "stop", "load", "unload"):
        return "stop"
    return str(done_reason)


def _usage(data: dict[str, Any]) -> dict[str, int]:
    # Metric fields are omitempty: absent means zero (ollama.md 1.3).
    prompt = data.get("prompt_eval_count") or 0
    completion = data.get("eval_count") or 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _new_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def parse_chat(spec: BackendSpec, body: bytes) -> ChatCompletion:
    """A ``stream: false`` answer -> :class:`ChatCompletion`."""
    data = _load(spec, body, "chat answer")
    _raise_if_error(spec, data)
    message = _message(spec, data)
    calls = _tool_calls(spec, message.get("tool_calls"), 0)
    out: dict[str, Any] = {"role": "assistant", "content": message.get("content") or ""}
    if calls:
        out["tool_calls"] = [{k: v for k, v in c.items() if k != "index"} for c in calls]
        out["content"] = out["content"] or None  # OpenAI sends null beside tool calls
    if message.get("thinking"):
        out["reasoning"] = message["thinking"]  # the field Ollama's own /v1 API uses
    choice: dict[str, Any] = {
        "index": 0,
        "message": out,
        "finish_reason": _finish_reason(data.get("done_reason"), bool(calls)),
    }
    if isinstance(data.get("logprobs"), list):
        choice["logprobs"] = {"content": data["logprobs"]}
    return ChatCompletion.model_validate(
        {
            "id": _new_id(),
            "object": "chat.completion",
            "created": _created(data.get("created_at")),
            "model": data.get("model") or "",
            "choices": [choice],
            "usage": _usage(data),
        }
    )


def parse_models(spec: BackendSpec, body: bytes) -> ModelList:
    """``GET /api/tags`` -> :class:`ModelList` (ids are ``name:tag``)."""
    data = _load(spec, body, "/api/tags answer")
    models = data.get("models")
    if not isinstance(models, list):
        raise ProtocolError("malformed /api/tags answer: no 'models' list", backend=spec.name)
    result = []
    for entry in models:
        name = (entry.get("name") or entry.get("model")) if isinstance(entry, dict) else None
        if not isinstance(name, str):
            raise ProtocolError(f"malformed /api/tags entry: {entry!r:.200}", backend=spec.name)
        path = name.split(":", 1)[0].split("/")
        owner = path[-2] if len(path) > 1 else "library"
        result.append(Model(id=name, created=_created(entry.get("modified_at")), owned_by=owner))
    return ModelList(object="list", data=result)


class ChunkDecoder:
    """Bytes of an NDJSON chat stream -> :class:`ChatCompletionChunk` values, one at a time.

    ``feed`` only splits lines; ``parse`` turns one line into a chunk. The first chunk carries
    ``role: "assistant"``; the ``done: true`` line becomes the finish chunk, with the usage.
    An ``{"error": ...}`` line (a failure after the first line, ollama.md 4) raises the typed
    error; a body that ends before the ``done`` line raises :class:`BackendConnectionError`.
    """

    __slots__ = ("_created", "_done", "_id", "_lines", "_role_sent", "_spec", "_tools")

    def __init__(self, spec: BackendSpec) -> None:
        self._spec = spec
        self._lines = NDJSONDecoder()
        self._done = False
        self._role_sent = False
        self._tools = 0  # tool calls seen so far: the next one's index
        self._id = _new_id()
        self._created: int | None = None

    @property
    def done(self) -> bool:
        """The ``done: true`` line was parsed: the stream is complete."""
        return self._done

    @property
    def finished(self) -> bool:
        """The answer is whole: the same line that finishes it ends the stream."""
        return self._done

    def feed(self, data: bytes) -> list[bytes]:
        """Split more body bytes into complete lines (not parsed yet)."""
        return self._lines.feed(data)

    def close(self) -> list[bytes]:
        """The body ended: a last line lacking its newline, if it is a whole JSON value."""
        rest = self._lines.close()
        if not rest:
            return []
        try:
            pydantic_core.from_json(rest[0])
        except ValueError:
            return []  # cut mid-line: check_end reports the short answer
        return rest

    def parse(self, event: bytes) -> ChatCompletionChunk | None:
        """One line as a chunk; ``None`` for a line that adds nothing (or one after ``done``)."""
        if self._done:
            return None
        spec = self._spec
        data = _load(spec, event, "stream line")
        _raise_if_error(spec, data)
        message = _message(spec, data)
        delta: dict[str, Any] = {}
        if not self._role_sent:
            delta["role"] = "assistant"
            delta["content"] = ""
            self._role_sent = True
            self._created = _created(data.get("created_at"))
        if message.get("content"):
            delta["content"] = message["content"]
        if message.get("thinking"):
            delta["reasoning"] = message["thinking"]
        calls = _tool_calls(spec, message.get("tool_calls"), self._tools)
        if calls:
            delta["tool_calls"] = calls
            self._tools += len(calls)
        choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": None}
        if isinstance(data.get("logprobs"), list) and data["logprobs"]:
            choice["logprobs"] = {"content": data["logprobs"]}
        chunk: dict[str, Any] = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": data.get("model") or "",
            "choices": [choice],
        }
        if data.get("done") is True:
            self._done = True
            choice["finish_reason"] = _finish_reason(data.get("done_reason"), self._tools > 0)
            chunk["usage"] = _usage(data)
        elif not delta and "logprobs" not in choice:
            return None
        return ChatCompletionChunk.model_validate(chunk)

    def check_end(self) -> None:
        """Every line is parsed and the body is over: complain if ``done`` never came."""
        if not self._done:
            raise BackendConnectionError(
                "stream ended before Ollama's done line", backend=self._spec.name
            )


def _ollama_host(env: Mapping[str, str]) -> tuple[str, int | None]:
    """Ollama's own convention: ``OLLAMA_HOST`` (``host``, ``host:port`` or a URL)."""
    from urllib.parse import urlsplit

    raw = env.get("OLLAMA_HOST", "").strip() or "127.0.0.1"
    parts = urlsplit(raw if "://" in raw else "http://" + raw)
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"OLLAMA_HOST={raw!r}: expected host, host:port or a URL") from None
    host = parts.hostname or "127.0.0.1"
    return ("127.0.0.1" if host == "0.0.0.0" else host), port


BACKEND = BackendDeclaration(
    "ollama",
    description="Ollama's native API (/api/chat)",
    default_port=11434,
    default_path="",
    default_address=_ollama_host,
    capabilities=CAPABILITIES,
    embeddings=True,
    embeddings_codec="llmrouter.backends.ollama_embed",
)

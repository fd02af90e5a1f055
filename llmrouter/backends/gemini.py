"""Codec for Google's Gemini API (``gemini://?model=gemini-2.5-flash``) and for Gemini on
Vertex AI (``vertex://PROJECT/LOCATION?model=...``): ``models/{model}:generateContent`` and
``:streamGenerateContent?alt=sse``.

The two share the request and response shapes; they differ in where requests go and how they
are authenticated: the Gemini API takes a key in ``x-goog-api-key`` (``GEMINI_API_KEY``, else
``GOOGLE_API_KEY``; never in the URL), Vertex AI an OAuth bearer token from Application Default
Credentials (:mod:`llmrouter.backends.vertex_auth`, google-auth imported lazily and refreshed
off the event loop through ``needs_prepare``/``prepare``). What was relied on:
``docs/backends/gemini.md``. The JSON-schema subset that ``responseSchema`` takes lives in
:mod:`llmrouter.backends._gemini_schema`.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
import uuid
from collections.abc import Mapping
from typing import Any

import pydantic
import pydantic_core

from llmrouter._http import HTTPRequest
from llmrouter._request import ChatRequest
from llmrouter.backends import (
    BackendDeclaration,
    BackendSpec,
    Capabilities,
    Option,
    SSEChunkDecoder,
    URLParts,
    error_from_status,
    openai_compat,
    vertex_auth,
)
from llmrouter.backends._gemini_schema import to_gemini_schema
from llmrouter.errors import (
    AuthenticationError,
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
    "CAPABILITIES", "ChunkDecoder", "build_chat", "build_health", "build_models", "map_error",
    "needs_prepare", "parse_chat", "parse_models", "prepare", "request_body",
]  # fmt: skip

# The model is part of the URL path: with no model known the driver says so before sending
# (``AsyncHTTPBackend._model``).
MODEL_REQUIRED = True

CAPABILITIES = Capabilities(
    tools=True,
    tool_choice=True,
    json_object=True,  # responseMimeType application/json
    json_schema=True,  # responseSchema, within the subset Gemini accepts (else refused)
    stream_usage=True,  # usageMetadata rides on the last event
    seed=True,
    n=False,
    logprobs=False,
    stop=True,
)

_FINISH = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}
_DATA_URI = re.compile(r"data:([\w.+-]+/[\w.+-]+);base64,(.*)", re.DOTALL)
_UNSUPPORTED = {
    "logprobs": "use extra_body generationConfig.responseLogprobs",
    "top_logprobs": "use extra_body generationConfig.logprobs",
    "logit_bias": "Gemini has no logit_bias",
    "audio": "audio output is not available here",
    "modalities": "answers are text",
    "prediction": "predicted outputs are not available",
    "web_search_options": "use Gemini's google_search tool through extra_body",
    "functions": "use tools",
    "function_call": "use tool_choice",
    "reasoning_effort": "use extra_body generationConfig.thinkingConfig",
    "verbosity": "Gemini has no verbosity setting",
    "service_tier": "Gemini has no service tier",
}
_IGNORED = frozenset(
    {"store", "metadata", "prompt_cache_key", "stream_options", "user", "safety_identifier",
     "parallel_tool_calls"}
)  # fmt: skip


def _invalid(spec: BackendSpec, message: str, param: str) -> InvalidRequestError:
    return InvalidRequestError(f"{spec.scheme}:// {message}", param=param)


# ---------------------------------------------------------------------------------------------
# Requests


def _headers(spec: BackendSpec, accept: str, request: ChatRequest | None) -> dict[str, str]:
    base = {"Accept": accept}
    if request is not None:
        base["Content-Type"] = "application/json"
    if spec.scheme == "vertex":
        headers = openai_compat.request_headers(spec, base, request)
        headers["Authorization"] = "Bearer " + vertex_auth.token(spec)
        quota = dict(spec.options).get("quota_project")
        if quota:
            headers["x-goog-user-project"] = quota
        return headers
    return openai_compat.request_headers(
        spec, base, request, key_header="x-goog-api-key", key_prefix=""
    )


def _model_path(model: str) -> str:
    model = model.removeprefix("models/")
    if not re.fullmatch(r"[A-Za-z0-9._@-]+", model):
        raise InvalidRequestError(f"model {model!r}: expected a Gemini model name", param="model")
    return f"/models/{model}"


def build_chat(spec: BackendSpec, request: ChatRequest, model: str) -> HTTPRequest:
    """``generateContent`` (or ``streamGenerateContent?alt=sse``) for ``request``.

    Raises:
        InvalidRequestError: for what the API cannot express (``n > 1``, logprobs, a
            ``response_format`` schema outside the subset ``responseSchema`` takes...).
    """
    body = request_body(spec, request)
    op = ":streamGenerateContent?alt=sse" if request.stream else ":generateContent"
    accept = "text/event-stream" if request.stream else "application/json"
    return HTTPRequest(
        method="POST",
        url=spec.base_url + _model_path(model) + op,
        headers=_headers(spec, accept, request),
        body=pydantic_core.to_json(body),
        backend=spec.name,
    )


def request_body(spec: BackendSpec, request: ChatRequest) -> dict[str, Any]:
    """The ``GenerateContentRequest`` body for an OpenAI-shaped request (pure)."""
    params = request.params
    for name in params:
        if name in _UNSUPPORTED and params[name] not in (None, False):
            raise _invalid(spec, f"does not support {name}: {_UNSUPPORTED[name]}", name)
    if params.get("n", 1) != 1:
        raise _invalid(spec, "returns one choice per request here: n must be 1", "n")
    system, contents = _contents(spec, request.messages)
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": [{"text": t} for t in system]}
    config: dict[str, Any] = {}
    simple = {
        "temperature": "temperature",
        "top_p": "topP",
        "seed": "seed",
        "presence_penalty": "presencePenalty",
        "frequency_penalty": "frequencyPenalty",
    }
    for name, key in simple.items():
        if params.get(name) is not None:
            config[key] = params[name]
    max_tokens = params.get("max_completion_tokens") or params.get("max_tokens")
    if max_tokens:
        config["maxOutputTokens"] = max_tokens
    stop = params.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    fmt = params.get("response_format") or {}
    if fmt.get("type") == "json_object":
        config["responseMimeType"] = "application/json"
    elif fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema") or {"type": "object"}
        config["responseMimeType"] = "application/json"
        config["responseSchema"] = to_gemini_schema(
            schema, spec.scheme, "response_format.json_schema.schema"
        )
    if config:
        body["generationConfig"] = config
    _tools(spec, body, params)
    if request.extra_body:
        body.update(request.extra_body)  # safetySettings, cachedContent, thinkingConfig...
    return body


def _tools(spec: BackendSpec, body: dict[str, Any], params: Mapping[str, Any]) -> None:
    declarations = []
    for i, tool in enumerate(params.get("tools") or []):
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            raise _invalid(spec, "supports function tools only", f"tools[{i}]")
        fn = tool["function"]
        declaration: dict[str, Any] = {"name": fn["name"]}
        if fn.get("description"):
            declaration["description"] = fn["description"]
        parameters = fn.get("parameters")
        if parameters and parameters.get("properties"):
            where = f"tools[{i}].function.parameters"
            declaration["parameters"] = to_gemini_schema(parameters, spec.scheme, where)
        declarations.append(declaration)
    choice = params.get("tool_choice")
    if not declarations:
        if choice not in (None, "none", "auto"):
            raise _invalid(spec, f"tool_choice {choice!r} needs tools", "tool_choice")
        return
    body["tools"] = [{"functionDeclarations": declarations}]
    mode: dict[str, Any] | None = None
    if choice == "none":
        mode = {"mode": "NONE"}
    elif choice == "auto":
        mode = {"mode": "AUTO"}
    elif choice == "required":
        mode = {"mode": "ANY"}
    elif choice is not None:
        fn = choice.get("function") if isinstance(choice, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise _invalid(
                spec, "tool_choice: expected auto, none, required or a function", "tool_choice"
            )
        mode = {"mode": "ANY", "allowedFunctionNames": [fn["name"]]}
    if mode is not None:
        body["toolConfig"] = {"functionCallingConfig": mode}


def _contents(
    spec: BackendSpec, messages: list[dict[str, Any]]
) -> tuple[list[str], list[dict[str, Any]]]:
    """OpenAI messages -> (system texts, ``contents`` with roles user/model)."""
    system: list[str] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool call id -> function name (functionResponse needs it)
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        role = message["role"]
        if role in ("system", "developer"):
            system.extend(_texts(spec, message.get("content"), where))
            continue
        if role == "user":
            parts = _user_parts(spec, message.get("content"), where)
        elif role == "assistant":
            role = "model"
            parts = [{"text": t} for t in _texts(spec, message.get("content"), where)]
            for j, call in enumerate(message.get("tool_calls") or []):
                fn = call["function"]
                try:
                    args = json.loads(fn.get("arguments") or "{}")
                except ValueError:
                    args = None
                if not isinstance(args, dict):
                    raise _invalid(
                        spec, "tool call arguments must be a JSON object",
                        f"{where}.tool_calls[{j}].function.arguments",
                    )  # fmt: skip
                names[call["id"]] = fn["name"]
                parts.append({"functionCall": {"name": fn["name"], "args": args}})
        elif role == "tool":
            role = "user"
            call_id = message.get("tool_call_id")
            if call_id not in names:
                raise _invalid(
                    spec, "a tool message must answer an earlier assistant tool call",
                    f"{where}.tool_call_id",
                )  # fmt: skip
            text = "".join(_texts(spec, message.get("content"), where))
            try:
                value = json.loads(text)
            except ValueError:
                value = None
            response = value if isinstance(value, dict) else {"result": text}
            parts = [{"functionResponse": {"name": names[call_id], "response": response}}]
        else:
            raise _invalid(spec, f"does not support role {role!r}", f"{where}.role")
        if not parts:
            continue
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)  # parallel responses: one turn
        else:
            contents.append({"role": role, "parts": parts})
    if not contents:
        raise _invalid(spec, "needs at least one user or assistant message", "messages")
    return system, contents


def _texts(spec: BackendSpec, content: Any, where: str) -> list[str]:
    if isinstance(content, str):
        return [content] if content else []
    texts = []
    for j, part in enumerate(content or []):
        text = part.get(part["type"]) if part["type"] in ("text", "refusal") else None
        if not isinstance(text, str):
            raise _invalid(
                spec, f"expected text parts, got {part['type']!r}", f"{where}.content[{j}]"
            )
        if text:
            texts.append(text)
    return texts


def _user_parts(spec: BackendSpec, content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}]
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        if part["type"] == "text":
            parts.append({"text": part["text"]})
        elif part["type"] == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            match = _DATA_URI.fullmatch(url) if isinstance(url, str) else None
            if match is None:
                raise _invalid(
                    spec, "image_url.url: expected a base64 data: URI", f"{where}.content[{j}]"
                )
            parts.append({"inlineData": {"mimeType": match.group(1), "data": match.group(2)}})
        else:
            raise _invalid(
                spec,
                f"takes text and image_url parts, got {part['type']!r}",
                f"{where}.content[{j}]",
            )
    return parts


def build_models(spec: BackendSpec) -> HTTPRequest:
    """``GET /models`` (Gemini API; Vertex AI lists publisher models the same way)."""
    return HTTPRequest(
        method="GET",
        url=spec.base_url + "/models?pageSize=1000",
        headers=_headers(spec, "application/json", None),
        backend=spec.name,
    )


def build_health(spec: BackendSpec) -> HTTPRequest:
    """The health probe: the model's own record (``GET /models/{model}``) when one is pinned."""
    if spec.model:
        return HTTPRequest(
            method="GET",
            url=spec.base_url + _model_path(spec.model),
            headers=_headers(spec, "application/json", None),
            backend=spec.name,
        )
    return build_models(spec)


def needs_prepare(spec: BackendSpec) -> bool:
    """Vertex AI: the ADC token is missing or due for refresh (cheap; no I/O)."""
    return spec.scheme == "vertex" and vertex_auth.needs_prepare(spec)


def prepare(spec: BackendSpec) -> None:
    """Vertex AI: load and refresh Application Default Credentials (blocking, may do I/O)."""
    if spec.scheme == "vertex":
        vertex_auth.prepare(spec)


# ---------------------------------------------------------------------------------------------
# Errors

_STATUS_CLASS: dict[str, type[StatusError]] = {
    "INVALID_ARGUMENT": BadRequestError,
    "FAILED_PRECONDITION": BadRequestError,
    "OUT_OF_RANGE": BadRequestError,
    "UNAUTHENTICATED": AuthenticationError,
    "PERMISSION_DENIED": AuthenticationError,
    "NOT_FOUND": NotFoundError,
    "RESOURCE_EXHAUSTED": RateLimitError,
    "INTERNAL": ServerError,
    "UNAVAILABLE": ServerError,
    "DEADLINE_EXCEEDED": ServerError,
}
_CONTEXT = re.compile(r"exceeds the maximum number of tokens|token count .* exceeds|too long", re.I)
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)s$")


def _retry_delay(details: Any) -> float | None:
    """``google.rpc.RetryInfo``'s ``retryDelay`` ("13s", "0.5s") in seconds."""
    for detail in details if isinstance(details, list) else []:
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith(
            "google.rpc.RetryInfo"
        ):
            match = _DURATION.match(str(detail.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    return None


def _reasons(details: Any) -> set[str]:
    return {
        str(d.get("reason"))
        for d in (details if isinstance(details, list) else [])
        if isinstance(d, dict) and d.get("reason")
    }


def map_error(
    spec: BackendSpec, status: int, headers: Mapping[str, str], body: bytes
) -> StatusError:
    """Google's ``{"error": {"code", "message", "status", "details"}}`` -> the typed tree."""
    base = error_from_status(status, headers, body, backend=spec.name)
    data = base.body if isinstance(base.body, dict) else {}
    error: dict[str, Any] = data["error"] if isinstance(data.get("error"), dict) else {}
    code = str(error.get("status") or "")
    message = str(error.get("message") or base.message.removeprefix(f"HTTP {status}: "))
    cls = _STATUS_CLASS.get(code, type(base))
    if "API_KEY_INVALID" in _reasons(error.get("details")):
        cls = AuthenticationError  # a bad key is a 400 INVALID_ARGUMENT here
    if cls is BadRequestError and _CONTEXT.search(message):
        cls = ContextLengthError
    retry_after = base.retry_after
    if retry_after is None:
        retry_after = _retry_delay(error.get("details"))
    return cls(
        message,
        backend=spec.name,
        status_code=status,
        body=base.body,
        retry_after=retry_after,
        request_id=base.request_id,
        error_type=code or base.error_type,
        retryable=base.retryable if base.should_retry is not None else None,
    )


def _raise_error_object(spec: BackendSpec, data: Any) -> None:
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        code = error.get("code")
        status = code if isinstance(code, int) and 400 <= code <= 599 else 500
        raise map_error(spec, status, {}, pydantic_core.to_json(data))


def _blocked(spec: BackendSpec, data: dict[str, Any]) -> None:
    """A prompt blocked by ``promptFeedback`` is an error, not an empty answer."""
    feedback = data.get("promptFeedback")
    if isinstance(feedback, dict) and feedback.get("blockReason") and not data.get("candidates"):
        reason = feedback["blockReason"]
        detail = feedback.get("blockReasonMessage") or ""
        raise BadRequestError(
            f"the prompt was blocked ({reason}){': ' + detail if detail else ''}",
            backend=spec.name,
            status_code=400,
            body={"promptFeedback": feedback},
            error_type="prompt_blocked",
        )


# ---------------------------------------------------------------------------------------------
# Responses


def _usage(meta: Any) -> dict[str, Any] | None:
    if not isinstance(meta, dict):
        return None
    prompt = int(meta.get("promptTokenCount") or 0)
    thoughts = int(meta.get("thoughtsTokenCount") or 0)
    completion = int(meta.get("candidatesTokenCount") or 0) + thoughts
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion + int(meta.get("toolUsePromptTokenCount") or 0),
    }
    if thoughts:
        usage["completion_tokens_details"] = {"reasoning_tokens": thoughts}
    if meta.get("cachedContentTokenCount"):
        usage["prompt_tokens_details"] = {"cached_tokens": int(meta["cachedContentTokenCount"])}
    return usage


def _new_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def _finish(reason: Any, calls: bool) -> str:
    finish = _FINISH.get(str(reason), "stop")
    return "tool_calls" if calls and finish == "stop" else finish


def parse_chat(spec: BackendSpec, body: bytes) -> ChatCompletion:
    """A ``GenerateContentResponse`` -> :class:`ChatCompletion` (safety ratings kept on the
    choice as ``safety_ratings`` when the answer was filtered)."""
    try:
        data = pydantic_core.from_json(body)
    except ValueError:
        raise ProtocolError(f"response is not JSON: {body[:200]!r}", backend=spec.name) from None
    _raise_error_object(spec, data)
    if not isinstance(data, dict):
        raise ProtocolError("response is not an object", backend=spec.name)
    _blocked(spec, data)
    try:
        return _completion(spec, data)
    except (KeyError, TypeError, AttributeError, IndexError, pydantic.ValidationError) as exc:
        raise ProtocolError(
            f"malformed GenerateContentResponse: {type(exc).__name__}: {exc}"[:300],
            backend=spec.name,
        ) from None


def _completion(spec: BackendSpec, data: dict[str, Any]) -> ChatCompletion:
    candidate = data["candidates"][0]
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in (candidate.get("content") or {}).get("parts") or []:
        if "functionCall" in part:
            call = part["functionCall"]
            function = {"name": call["name"], "arguments": json.dumps(call.get("args") or {})}
            call_id = call.get("id") or f"call_{uuid.uuid4().hex[:12]}"
            calls.append({"id": call_id, "type": "function", "function": function})
        elif isinstance(part.get("text"), str):
            (reasoning if part.get("thought") else texts).append(part["text"])
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not calls else None,
    }
    if calls:
        message["tool_calls"] = calls
    if reasoning:
        message["reasoning"] = "".join(reasoning)
    finish = _finish(candidate.get("finishReason"), bool(calls))
    choice: dict[str, Any] = {
        "index": 0,
        "message": message,
        "finish_reason": finish,
        "logprobs": None,
    }
    if finish == "content_filter" and candidate.get("safetyRatings"):
        choice["safety_ratings"] = candidate["safetyRatings"]
    completion: dict[str, Any] = {
        "id": data.get("responseId") or _new_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": data.get("modelVersion") or spec.model or "gemini",
        "choices": [choice],
    }
    usage = _usage(data.get("usageMetadata"))
    if usage is not None:
        completion["usage"] = usage
    return ChatCompletion.model_validate(completion)


def parse_models(spec: BackendSpec, body: bytes) -> ModelList:
    """``{"models": [{"name": "models/gemini-2.5-flash", ...}]}`` -> a model list."""
    try:
        data = pydantic_core.from_json(body)
        entries = data.get("models") or data.get("publisherModels") or []
        ids = [str(e["name"]).rsplit("/", 1)[-1] for e in entries]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ProtocolError(f"malformed models answer: {body[:200]!r}", backend=spec.name) from None
    return ModelList(object="list", data=[Model(id=i, created=0, owned_by="google") for i in ids])


# ---------------------------------------------------------------------------------------------
# Streams


class ChunkDecoder(SSEChunkDecoder):
    """``streamGenerateContent?alt=sse`` events (each a partial ``GenerateContentResponse``)
    -> chunks. The stream has no terminator: it ends after the event with a ``finishReason``,
    which gives the one finish chunk (with the usage). A ``functionCall`` part arrives whole
    and becomes one tool-call chunk; an ``{"error": ...}`` event raises the typed error."""

    __slots__ = ("_created", "_id", "_model", "_next_tool", "_role_sent", "_usage")

    TERMINATOR = "the end of the stream"
    FINISH = "finishReason"

    def __init__(self, spec: BackendSpec) -> None:
        super().__init__(spec)
        self._id = _new_id()
        self._created = int(time.time())
        self._model = spec.model or "gemini"
        self._role_sent = False
        self._next_tool = 0
        self._usage: dict[str, Any] | None = None

    def parse(self, event: bytes) -> ChatCompletionChunk | None:
        """One event as a chunk (``None`` when it carries nothing new)."""
        if self._finished:
            return None
        try:
            data = pydantic_core.from_json(event)
        except ValueError:
            raise ProtocolError(
                f"malformed stream event: {event[:200]!r}", backend=self._spec.name
            ) from None
        _raise_error_object(self._spec, data)
        if not isinstance(data, dict):
            raise ProtocolError(
                f"stream event is not an object: {event[:200]!r}", backend=self._spec.name
            )
        _blocked(self._spec, data)
        try:
            return self._parse(data)
        except (KeyError, TypeError, AttributeError, IndexError, pydantic.ValidationError) as exc:
            raise ProtocolError(
                f"malformed stream event: {event[:200]!r}", backend=self._spec.name
            ) from exc

    def _parse(self, data: dict[str, Any]) -> ChatCompletionChunk | None:
        if data.get("modelVersion"):
            self._model = str(data["modelVersion"])
        if data.get("responseId") and not self._role_sent:
            self._id = str(data["responseId"])
        self._usage = _usage(data.get("usageMetadata")) or self._usage
        candidates = data.get("candidates") or [{}]
        candidate = candidates[0]
        delta: dict[str, Any] = {}
        if not self._role_sent:
            delta = {"role": "assistant", "content": ""}
            self._role_sent = True
        texts: list[str] = []
        reasoning: list[str] = []
        calls: list[dict[str, Any]] = []
        for part in (candidate.get("content") or {}).get("parts") or []:
            if "functionCall" in part:
                call = part["functionCall"]
                function = {"name": call["name"], "arguments": json.dumps(call.get("args") or {})}
                call_id = call.get("id") or f"call_{uuid.uuid4().hex[:12]}"
                calls.append({
                    "index": self._next_tool, "id": call_id, "type": "function",
                    "function": function,
                })  # fmt: skip
                self._next_tool += 1
            elif isinstance(part.get("text"), str):
                (reasoning if part.get("thought") else texts).append(part["text"])
        if texts:
            delta["content"] = delta.get("content", "") + "".join(texts)
        if reasoning:
            delta["reasoning"] = "".join(reasoning)
        if calls:
            delta["tool_calls"] = calls
        reason = candidate.get("finishReason")
        if reason is None:
            return self._chunk(delta) if delta else None
        self._finished = True
        finish = _finish(reason, self._next_tool > 0)
        choice_extra = {}
        if finish == "content_filter" and candidate.get("safetyRatings"):
            choice_extra["safety_ratings"] = candidate["safetyRatings"]
        return self._chunk(delta, finish, self._usage, choice_extra)

    def _chunk(
        self,
        delta: dict[str, Any],
        finish: str | None = None,
        usage: Any = None,
        extra: dict[str, Any] | None = None,
    ) -> ChatCompletionChunk:
        return stream_chunk(self._id, self._created, self._model, delta, finish, usage, extra)


# ---------------------------------------------------------------------------------------------
# Declarations

_GEMINI_HOST = "generativelanguage.googleapis.com"


def _vertex_configure(spec: BackendSpec, url: URLParts, env: Mapping[str, str]) -> BackendSpec:
    """``vertex://PROJECT/LOCATION``: the publisher-model base URL for that project."""
    project, _, location = spec.location.strip("/").partition("/")
    if not project or not location or "/" in location:
        raise ConfigError(
            f"backend URL {spec.name!r}: expected vertex://PROJECT/LOCATION?model=MODEL "
            "(LOCATION: us-central1, europe-west4, global...)"
        )
    if not re.fullmatch(r"[a-z][a-z0-9-]{4,61}[a-z0-9]|[a-z0-9.:-]+", project) or not re.fullmatch(
        r"[a-z0-9-]+", location
    ):
        raise ConfigError(f"backend URL {spec.name!r}: project or location is malformed")
    endpoint = dict(spec.options).get("endpoint")
    if endpoint:
        if not endpoint.startswith(("http://", "https://")):
            raise ConfigError(f"endpoint={endpoint!r}: expected an http:// or https:// URL")
        root = endpoint.rstrip("/")
    elif location == "global":
        root = "https://aiplatform.googleapis.com"
    else:
        root = f"https://{location}-aiplatform.googleapis.com"
    base = f"{root}/v1/projects/{project}/locations/{location}/publishers/google"
    return dataclasses.replace(spec, base_url=base)


BACKENDS = (
    BackendDeclaration(
        "gemini",
        description="the Gemini API (Google AI Studio)",
        default_host=_GEMINI_HOST,
        default_path="/v1beta",
        transport="https",
        key_env=("GEMINI_API_KEY", "GOOGLE_API_KEY"),
        key_required=True,
        capabilities=CAPABILITIES,
        embeddings=True,
        embeddings_codec="llmrouter.backends.gemini_embed",
    ),
    BackendDeclaration(
        "vertex",
        description="Gemini on Google Cloud Vertex AI (Application Default Credentials)",
        transport="https",
        location="name",
        options=(
            Option("endpoint", help="another endpoint URL (Private Service Connect, tests)"),
            Option("token_env", help="a variable holding an OAuth access token, instead of ADC"),
            Option("quota_project", help="the project billed for quota (x-goog-user-project)"),
        ),
        configure=_vertex_configure,
        capabilities=CAPABILITIES,
    ),
)

"""A loopback fake of the Gemini API (and of Gemini on Vertex AI), from Google's published
references (``docs/backends/gemini.md`` lists them: ``models.generateContent``,
``models.streamGenerateContent``, ``GenerateContentResponse``, ``Schema``, ``FunctionCall``,
the API's error model with ``google.rpc.RetryInfo``, Vertex AI's endpoint format)::

    with GeminiFake() as fake:
        fake.script(GoogleError(429, "RESOURCE_EXHAUSTED", "Quota exceeded", retry_delay="7s"))
        client = llmrouter.Client(fake.url())   # gemini+http://127.0.0.1:PORT?model=...

* Gemini API routes: ``POST /v1beta/models/{model}:generateContent`` and
  ``:streamGenerateContent?alt=sse``; the key must come in ``x-goog-api-key`` (a wrong one is
  the API's 400 ``INVALID_ARGUMENT`` with reason ``API_KEY_INVALID``); a key in the query
  string (``?key=``) is refused with 400, so that a client leaking it into URLs fails here.
* Vertex AI routes: ``POST /v1/projects/{p}/locations/{l}/publishers/google/models/{m}:...``
  with ``Authorization: Bearer <token>`` (else 401 ``UNAUTHENTICATED``).
* Bodies are validated as the API does (400 ``INVALID_ARGUMENT``, "Invalid JSON payload
  received. Unknown name ..." for fields the proto lacks, roles ``user``/``model``, one data
  member per part, ``functionResponse`` with a name and an object, schema types); an unknown
  model is 404 ``NOT_FOUND``. Answers: the scripted :class:`Reply` / :class:`GoogleError` /
  ``Error`` / ``Close`` / ``Stall``, else computed as ``OpenAIFake(computed=True)`` computes
  (echo, stop sequences, ``maxOutputTokens``, forced function calls, JSON following the
  ``responseSchema``) in Gemini's shape; streams are SSE events (``data: {...}\\r\\n\\r\\n``),
  each a partial ``GenerateContentResponse``, the last with ``finishReason`` and
  ``usageMetadata``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

from tests.fakes import openai_fake
from tests.fakes.openai_fake import (
    Close,
    Completion,
    Error,
    OpenAIFake,
    Recorded,
    Stall,
    Stream,
    _Conn,
)

API_KEY = "AIzaFAKE-gemini-key-0123456789"
TOKEN = "ya29.fake-vertex-access-token"
MODEL = "gemini-2.5-flash"
PROJECT = "my-project-123"
LOCATION = "us-central1"

_GEMINI = re.compile(
    r"^/v1beta/models/(?P<model>[^/:]+):(?P<op>generateContent|streamGenerateContent)$"
)
_VERTEX = re.compile(
    r"^/v1/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/publishers/google/"
    r"models/(?P<model>[^/:]+):(?P<op>generateContent|streamGenerateContent)$"
)
_REQUEST_FIELDS = frozenset(
    {"contents", "systemInstruction", "tools", "toolConfig", "generationConfig",
     "safetySettings", "cachedContent", "labels"}
)  # fmt: skip
_CONFIG_FIELDS = frozenset(
    {"temperature", "topP", "topK", "maxOutputTokens", "stopSequences", "candidateCount",
     "seed", "presencePenalty", "frequencyPenalty", "responseMimeType", "responseSchema",
     "responseJsonSchema", "responseLogprobs", "logprobs", "thinkingConfig"}
)  # fmt: skip
_SCHEMA_FIELDS = frozenset(
    {"type", "format", "description", "title", "nullable", "enum", "properties", "required",
     "items", "minItems", "maxItems", "minimum", "maximum", "minLength", "maxLength",
     "pattern", "anyOf", "propertyOrdering", "minProperties", "maxProperties", "default",
     "example"}
)  # fmt: skip
_SCHEMA_TYPES = {"STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT", "NULL"}
_PART_DATA = frozenset(
    {"text", "inlineData", "fileData", "functionCall", "functionResponse", "executableCode",
     "codeExecutionResult"}
)  # fmt: skip


@dataclass
class Reply:
    """A scripted answer: ``parts`` of one candidate, written whole or as SSE events.

    Attributes:
        parts: the candidate's parts (``{"text"}``, ``{"functionCall": {"name", "args"}}``).
        pieces: streams: the text split into events (default: one event per part).
        finish: ``finishReason`` (``None``: no candidate finish, e.g. a blocked prompt).
        usage: ``usageMetadata``.
        safety: the candidate's ``safetyRatings``.
        prompt_feedback: ``promptFeedback`` (with ``blockReason``: no candidates are sent).
        error: streams: an error object sent as an event after the content.
        garbage: streams: raw bytes after the content.
        cut: streams: drop the connection after the content.
    """

    parts: list[dict[str, Any]] = field(default_factory=list)
    pieces: list[str] | None = None
    finish: str | None = "STOP"
    usage: dict[str, int] = field(
        default_factory=lambda: {
            "promptTokenCount": 9, "candidatesTokenCount": 3, "totalTokenCount": 12
        }
    )  # fmt: skip
    safety: list[dict[str, Any]] | None = None
    prompt_feedback: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    garbage: bytes = b""
    cut: bool = False


def text_reply(*pieces: str, **kw: Any) -> Reply:
    return Reply(parts=[{"text": "".join(pieces)}], pieces=list(pieces), **kw)


@dataclass
class GoogleError:
    """An error answer in Google's shape: ``{"error": {"code", "message", "status", "details"}}``."""  # noqa: E501

    status: int
    code: str  # the canonical status string: INVALID_ARGUMENT, RESOURCE_EXHAUSTED...
    message: str
    retry_delay: str | None = None  # google.rpc.RetryInfo's retryDelay ("7s")
    reason: str | None = None  # google.rpc.ErrorInfo's reason (API_KEY_INVALID)
    headers: dict[str, str] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        details: list[dict[str, Any]] = []
        if self.reason:
            details.append({
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": self.reason, "domain": "googleapis.com",
            })  # fmt: skip
        if self.retry_delay:
            details.append(
                {
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": self.retry_delay,
                }
            )
        error: dict[str, Any] = {"code": self.status, "message": self.message, "status": self.code}
        if details:
            error["details"] = details
        return {"error": error}


def _invalid(message: str) -> GoogleError:
    return GoogleError(400, "INVALID_ARGUMENT", message)


def _unknown(name: str, where: str) -> GoogleError:
    return _invalid(
        f"Invalid JSON payload received. Unknown name \"{name}\" at '{where}': Cannot find field."
    )


def validate_schema(schema: Any, where: str) -> GoogleError | None:
    if not isinstance(schema, dict):
        return _invalid(f"{where}: schema must be an object")
    for key, value in schema.items():
        if key not in _SCHEMA_FIELDS:
            return _unknown(key, where)
        if key == "type" and str(value).upper() not in _SCHEMA_TYPES:
            return _invalid(f"Invalid value at '{where}.type' ({value})")
        if key == "properties":
            for name, sub in value.items():
                problem = validate_schema(sub, f"{where}.properties[{name}].value")
                if problem:
                    return problem
        if key == "items":
            problem = validate_schema(value, f"{where}.items")
            if problem:
                return problem
    return None


def validate_request(body: Any) -> GoogleError | None:
    """The 400 the API would answer, or ``None``."""
    if not isinstance(body, dict):
        return _invalid("Invalid JSON payload received.")
    for key in body:
        if key not in _REQUEST_FIELDS:
            return _unknown(key, "")
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        return _invalid("* GenerateContentRequest.contents: contents is not specified")
    for i, content in enumerate(contents):
        if content.get("role") not in ("user", "model"):
            return _invalid(f"Please use a valid role: user, model. (contents[{i}])")
        parts = content.get("parts")
        if not isinstance(parts, list) or not parts:
            return _invalid(
                f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty."
            )
        for j, part in enumerate(parts):
            data = set(part) & _PART_DATA
            if len(data) != 1 or not set(part) <= _PART_DATA | {"thought", "thoughtSignature"}:
                return _invalid(
                    f"* GenerateContentRequest.contents[{i}].parts[{j}].data: required oneof field 'data' must have one initialized field"  # noqa: E501
                )
            response = part.get("functionResponse")
            if response is not None and (
                not response.get("name") or not isinstance(response.get("response"), dict)
            ):
                return _invalid(
                    f"* GenerateContentRequest.contents[{i}].parts[{j}].function_response.name: Name cannot be empty."  # noqa: E501
                )
    config = body.get("generationConfig") or {}
    for key in config:
        if key not in _CONFIG_FIELDS:
            return _unknown(key, "generation_config")
    if "responseSchema" in config:
        if config.get("responseMimeType") != "application/json":
            return _invalid("responseSchema requires responseMimeType application/json")
        problem = validate_schema(config["responseSchema"], "generation_config.response_schema")
        if problem:
            return problem
    declared = []
    for tool in body.get("tools") or []:
        for k, fn in enumerate(tool.get("functionDeclarations") or []):
            if not fn.get("name"):
                return _invalid(
                    f"* GenerateContentRequest.tools[0].function_declarations[{k}].name: Name cannot be empty."  # noqa: E501
                )
            declared.append(fn["name"])
            if "parameters" in fn:
                problem = validate_schema(
                    fn["parameters"], f"tools[0].function_declarations[{k}].parameters"
                )
                if problem:
                    return problem
    calling = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
    if calling.get("mode") not in (None, "AUTO", "ANY", "NONE", "VALIDATED"):
        return _invalid(
            f"Invalid value at 'tool_config.function_calling_config.mode' ({calling.get('mode')})"
        )
    for name in calling.get("allowedFunctionNames") or []:
        if name not in declared:
            return _invalid(f"allowed_function_names contains {name!r}, which is not declared")
    return None


# ---------------------------------------------------------------------------------------------
# Computed answers


def _lower(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: (str(v).lower() if k == "type" else _lower(v)) for k, v in schema.items()}
    return schema


def _texts(parts: list[dict[str, Any]]) -> str:
    return " ".join(p["text"] for p in parts if "text" in p)


def as_openai(body: dict[str, Any], model: str) -> dict[str, Any]:
    """The OpenAI chat body that means what this GenerateContentRequest means."""
    messages: list[dict[str, Any]] = []
    if body.get("systemInstruction"):
        messages.append({"role": "system", "content": _texts(body["systemInstruction"]["parts"])})
    ids: dict[str, list[str]] = {}
    n = 0
    for content in body["contents"]:
        parts = content["parts"]
        if content["role"] == "model":
            entry: dict[str, Any] = {"role": "assistant", "content": _texts(parts) or None}
            calls = []
            for part in parts:
                if "functionCall" in part:
                    call = part["functionCall"]
                    n += 1
                    ids.setdefault(call["name"], []).append(f"c{n}")
                    fn = {"name": call["name"], "arguments": json.dumps(call.get("args") or {})}
                    calls.append({"id": f"c{n}", "type": "function", "function": fn})
            if calls:
                entry["tool_calls"] = calls
            messages.append(entry)
            continue
        for part in parts:
            if "functionResponse" in part:
                response = part["functionResponse"]
                pending = ids.get(response["name"]) or ["unknown"]
                result = response["response"]
                text = result.get("result") if set(result) == {"result"} else json.dumps(result)
                messages.append(
                    {"role": "tool", "tool_call_id": pending.pop(0), "content": str(text)}
                )
        if _texts(parts) or not any("functionResponse" in p for p in parts):
            messages.append({"role": "user", "content": _texts(parts)})
    out: dict[str, Any] = {"model": model, "messages": messages}
    config = body.get("generationConfig") or {}
    if "maxOutputTokens" in config:
        out["max_tokens"] = config["maxOutputTokens"]
    if config.get("stopSequences"):
        out["stop"] = config["stopSequences"]
    if "responseSchema" in config:
        out["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "schema", "schema": _lower(config["responseSchema"])},
        }
    elif config.get("responseMimeType") == "application/json":
        out["response_format"] = {"type": "json_object"}
    declarations = [
        fn for tool in body.get("tools") or [] for fn in tool.get("functionDeclarations") or []
    ]
    if declarations:
        out["tools"] = [
            {
                "type": "function",
                "function": {"name": fn["name"], "parameters": _lower(fn.get("parameters") or {})},
            }
            for fn in declarations
        ]
        calling = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
        if calling.get("mode") == "ANY":
            allowed = calling.get("allowedFunctionNames") or []
            out["tool_choice"] = (
                {"type": "function", "function": {"name": allowed[0]}} if allowed else "required"
            )
    return out


_FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP"}


def computed_reply(body: dict[str, Any], model: str) -> Reply:
    answer = openai_fake.computed_answer(as_openai(body, model))
    assert isinstance(answer, Completion)
    parts: list[dict[str, Any]] = []
    pieces = None
    if answer.content:
        parts.append({"text": answer.content})
        pieces = re.findall(r"\S+\s*|\s+", answer.content)
    for call in answer.tool_calls or []:
        fn = call["function"]
        parts.append({"functionCall": {"name": fn["name"], "args": json.loads(fn["arguments"])}})
    usage = answer.usage or {}
    return Reply(
        parts=parts,
        pieces=pieces,
        finish=_FINISH[answer.finish_reason],
        usage={
            "promptTokenCount": usage.get("prompt_tokens", 0),
            "candidatesTokenCount": usage.get("completion_tokens", 0),
            "totalTokenCount": usage.get("total_tokens", 0),
        },
    )


def response(
    reply: Reply, model: str, parts: list[dict[str, Any]] | None = None, *, last: bool = True
) -> dict[str, Any]:
    """One ``GenerateContentResponse`` (``last``: with the finish and the usage)."""
    out: dict[str, Any] = {"modelVersion": model, "responseId": "fake-response-0"}
    if reply.prompt_feedback is not None:
        out["promptFeedback"] = reply.prompt_feedback
        if reply.prompt_feedback.get("blockReason"):
            out["usageMetadata"] = {"promptTokenCount": 9, "totalTokenCount": 9}
            return out
    candidate: dict[str, Any] = {
        "content": {"role": "model", "parts": reply.parts if parts is None else parts},
        "index": 0,
    }
    if last and reply.finish is not None:
        candidate["finishReason"] = reply.finish
        if reply.safety is not None:
            candidate["safetyRatings"] = reply.safety
    out["candidates"] = [candidate]
    if last:
        out["usageMetadata"] = reply.usage
    return out


def sse(data: Any) -> bytes:
    return b"data: " + json.dumps(data).encode() + b"\r\n\r\n"


def stream_frames(reply: Reply, model: str) -> list[bytes]:
    if reply.prompt_feedback and reply.prompt_feedback.get("blockReason"):
        return [sse(response(reply, model))]
    groups: list[list[dict[str, Any]]] = []
    for part in reply.parts:
        if "text" in part:
            groups += [[{"text": p}] for p in (reply.pieces or [part["text"]])]
        else:
            groups.append([part])
    if not groups:
        groups = [[]]
    tail = bool(reply.error or reply.garbage or reply.cut)
    frames = [
        sse(response(reply, model, g, last=not tail and i == len(groups) - 1))
        for i, g in enumerate(groups)
    ]
    if reply.error is not None:
        frames.append(sse(reply.error))
    if reply.garbage:
        frames.append(reply.garbage)
    return frames


Answer = Reply | GoogleError | Error | Close | Stall


class GeminiFake(OpenAIFake):
    """The fake Gemini API and Vertex AI endpoint; a context manager on a background thread."""

    def __init__(self, models: list[str] | None = None) -> None:
        super().__init__(models=list(models) if models is not None else [MODEL])
        self.api_key = None  # checked here, in Gemini's own way
        self.key = API_KEY
        self.token = TOKEN

    def url(self, model: str = MODEL, **query: str) -> str:
        extra = "".join(f"&{k}={v}" for k, v in query.items())
        return f"gemini+http://127.0.0.1:{self.port}?model={model}{extra}"

    def vertex_url(
        self, model: str = MODEL, token_env: str = "VERTEX_TEST_TOKEN", **query: str
    ) -> str:
        extra = "".join(f"&{k}={v}" for k, v in query.items())
        return (
            f"vertex://{PROJECT}/{LOCATION}?model={model}&endpoint=http://127.0.0.1:{self.port}"
            f"&token_env={token_env}{extra}"
        )

    @property
    def generate_requests(self) -> list[Recorded]:
        return [
            r for r in self.requests if "GenerateContent" in r.path or "generateContent" in r.path
        ]

    def _answer(self, request: Recorded) -> tuple[Answer, bool, str]:
        path, _, query = request.path.partition("?")
        if self.discovery is not None and request.method == "GET" and path.endswith("/models"):
            return self.discovery, False, ""  # type: ignore[return-value]
        params = parse_qs(query)
        if "key" in params:
            return (
                _invalid("API keys are not accepted in the query string here: send x-goog-api-key"),
                False,
                "",
            )
        vertex = _VERTEX.match(path)
        gemini = _GEMINI.match(path)
        route = vertex or gemini
        if vertex is not None:
            if request.headers.get("authorization") != f"Bearer {self.token}":
                message = (
                    "Request had invalid authentication credentials. Expected OAuth 2 access token."
                )
                return GoogleError(401, "UNAUTHENTICATED", message), False, ""
        elif gemini is not None:
            given = request.headers.get("x-goog-api-key")
            if given is None:
                return (
                    GoogleError(
                        403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers"
                    ),
                    False,
                    "",
                )
            if given != self.key:
                message = "API key not valid. Please pass a valid API key."
                return (
                    GoogleError(400, "INVALID_ARGUMENT", message, reason="API_KEY_INVALID"),
                    False,
                    "",
                )
        if request.method != "POST" or route is None:
            return GoogleError(404, "NOT_FOUND", f"Not found: {path}"), False, ""
        streaming = route["op"] == "streamGenerateContent"
        if streaming and params.get("alt") != ["sse"]:
            return _invalid("this fake streams only with alt=sse"), False, ""
        model = unquote(route["model"])
        if model not in self.models:
            message = f"models/{model} is not found for API version v1beta, or is not supported for generateContent."  # noqa: E501
            return GoogleError(404, "NOT_FOUND", message), streaming, model
        try:
            body = json.loads(request.body)
        except ValueError:
            return _invalid("Invalid JSON payload received."), streaming, model
        problem = validate_request(body)
        if problem is not None:
            return problem, streaming, model
        if self._queue:
            return self._queue.popleft(), streaming, model  # type: ignore[return-value]
        return computed_reply(body, model), streaming, model

    async def _respond(self, conn: _Conn, request: Recorded) -> bool:
        answer, streaming, model = self._answer(request)
        if isinstance(answer, Close):
            return False
        if isinstance(answer, Stall):
            await self._until_hangup(conn, None)
        if isinstance(answer, Reply) and streaming:
            frames = stream_frames(answer, model)
            return await self._stream(
                conn, Stream(frames, cut=answer.cut, headers={"Content-Type": "text/event-stream"})
            )
        if isinstance(answer, Reply):
            answer = Error(200, response(answer, model))
        if isinstance(answer, GoogleError):
            answer = Error(answer.status, answer.body(), answer.headers)
        raw, ctype = answer.encoded()
        head = {
            "Content-Type": "application/json; charset=UTF-8"
            if ctype == "application/json"
            else ctype,
            **answer.headers,
        }
        head["Content-Length"] = str(len(raw))
        await conn.write(openai_fake._head(answer.status, head) + raw)
        return True


__all__ = [
    "API_KEY", "LOCATION", "MODEL", "PROJECT", "TOKEN", "GeminiFake", "GoogleError", "Reply",
    "as_openai", "computed_reply", "response", "sse", "stream_frames", "text_reply",
    "validate_request", "validate_schema",
]  # fmt: skip

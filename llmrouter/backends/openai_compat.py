"""Codec for OpenAI-compatible servers: OpenAI, vLLM, llama.cpp, TGI's Messages API, Ollama /v1.

Sans-IO: builds :class:`HTTPRequest` values and parses bytes; the drivers in ``_async``/``_sync``
do the sending. Protocol facts: ``shared/protocols/openai-chat.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pydantic
import pydantic_core

from llmrouter._http import HTTPRequest
from llmrouter._request import ChatRequest
from llmrouter._status import error_from_status
from llmrouter.backends import Capabilities
from llmrouter.backends._stream import SSEChunkDecoder
from llmrouter.backends.declaration import BackendDeclaration, URLParts
from llmrouter.config import BackendSpec
from llmrouter.errors import ProtocolError, StatusError
from llmrouter.types import ChatCompletion, ChatCompletionChunk, ModelList

__all__ = [
    "ChunkDecoder",
    "build_chat",
    "request_headers",
    "build_health",
    "build_models",
    "map_error",
    "parse_chat",
    "parse_models",
]

# What the OpenAI protocol can express. Servers behind it differ (llama.cpp has no n > 1, vLLM
# needs server flags for tools): they answer with their own errors, mapped like any other.
CAPABILITIES = Capabilities(n=True, logprobs=True)

_JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
_STREAM_HEADERS = {"Content-Type": "application/json", "Accept": "text/event-stream"}


def request_headers(
    spec: BackendSpec,
    base: Mapping[str, str],
    request: ChatRequest | None,
    *,
    key_header: str = "Authorization",
    key_prefix: str = "Bearer ",
) -> dict[str, str]:
    """``base``, then the spec's headers, the key (``Authorization: Bearer`` unless a codec
    names another header), then the call's ``extra_headers``. Every codec builds them here."""
    headers = dict(base)
    if spec.headers:
        headers.update(spec.headers)
    if spec.api_key is not None:
        headers[key_header] = key_prefix + spec.api_key.reveal()
    if request is not None and request.extra_headers:
        headers.update(request.extra_headers)
    return headers


def build_chat(spec: BackendSpec, request: ChatRequest, model: str) -> HTTPRequest:
    """The ``POST /chat/completions`` request for ``request`` on this backend."""
    body: dict[str, Any] = {"model": model, "messages": request.messages}
    if request.params:
        body.update(request.params)
        fmt = body.get("response_format")
        if spec.scheme == "llamacpp" and fmt is not None and fmt.get("type") == "json_schema":
            # llama.cpp (and llama-cpp-python's server, which rejects json_schema) constrain
            # with the schema at the top level of a json_object format (openai-chat.md 6.4/6.5).
            schema = fmt["json_schema"].get("schema", {})
            body["response_format"] = {"type": "json_object", "schema": schema}
    if request.stream:
        body["stream"] = True
    if request.extra_body:
        body.update(request.extra_body)
    return HTTPRequest(
        method="POST",
        url=spec.base_url + "/chat/completions",
        headers=request_headers(
            spec, _STREAM_HEADERS if request.stream else _JSON_HEADERS, request
        ),
        body=pydantic_core.to_json(body),
        backend=spec.name,
    )


def build_models(spec: BackendSpec) -> HTTPRequest:
    """The ``GET /models`` request."""
    return HTTPRequest(
        method="GET",
        url=spec.base_url + "/models",
        headers=request_headers(spec, {"Accept": "application/json"}, None),
        backend=spec.name,
    )


# Servers with a cheap liveness route at their root (openai-chat.md 6.1, 6.2): /health.
_HEALTH_ROUTE = {"vllm": "/health", "tgi": "/health"}


def build_health(spec: BackendSpec) -> HTTPRequest:
    """The active health probe: vLLM and TGI ``GET /health``, others ``GET /models``."""
    route = _HEALTH_ROUTE.get(spec.scheme)
    if route is None:
        return build_models(spec)
    root = spec.base_url.removesuffix("/v1")
    return HTTPRequest(
        method="GET", url=root + route, headers=request_headers(spec, {}, None), backend=spec.name
    )


def map_error(
    spec: BackendSpec, status: int, headers: Mapping[str, str], body: bytes
) -> StatusError:
    """The typed error for a non-2xx response."""
    return error_from_status(status, headers, body, backend=spec.name)


def _raise_if_error_object(spec: BackendSpec, data: Any) -> None:
    error = data.get("error") if isinstance(data, dict) else None
    if error:
        # An error event inside a 200 response (vLLM, TGI, openai-python's rule: any data
        # object with a truthy "error"). TGI reports http_status_code 422 there.
        status = 500
        if isinstance(error, dict):
            code = error.get("http_status_code") or error.get("code")
            if isinstance(code, int) and 400 <= code <= 599:
                status = code
        raise error_from_status(status, {}, pydantic_core.to_json(data), backend=spec.name)


def _json_or_none(raw: bytes) -> Any:
    try:
        return pydantic_core.from_json(raw)
    except ValueError:
        return None


def parse_chat(spec: BackendSpec, body: bytes) -> ChatCompletion:
    """Parse a 200 response body into a :class:`ChatCompletion`."""
    try:
        return ChatCompletion.model_validate_json(body)
    except pydantic.ValidationError as exc:
        _raise_if_error_object(spec, _json_or_none(body))
        raise ProtocolError(
            f"response is not a chat completion: {_first_error(exc)}", backend=spec.name
        ) from None


def parse_models(spec: BackendSpec, body: bytes) -> ModelList:
    """Parse ``GET /models``."""
    try:
        return ModelList.model_validate_json(body)
    except pydantic.ValidationError as exc:
        raise ProtocolError(
            f"malformed /models answer: {_first_error(exc)}", backend=spec.name
        ) from None


def _first_error(exc: pydantic.ValidationError) -> str:
    err = exc.errors(include_url=False, include_input=False)[0]
    return f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"


class ChunkDecoder(SSEChunkDecoder):
    """Bytes of an SSE chat stream -> :class:`ChatCompletionChunk` values, one at a time.

    ``feed`` only frames events (cheap); ``parse`` turns one event into a chunk when the caller
    pulls it, so a stream holds raw bytes, not parsed models, for whatever it has buffered, and
    an error event raises exactly where it stands (after the content before it was handed over).
    Raises the typed error for an ``{"error": ...}`` event, :class:`ProtocolError` for a frame
    that is not a chunk, and :class:`BackendConnectionError` when the body ends before
    ``[DONE]`` while a choice is still unfinished.
    """

    __slots__ = ()

    def _ended(self, event: bytes) -> bool:
        """``[DONE]`` (or anything after it): the stream is over."""
        if not self._done and event.startswith(b"[DONE]"):
            self._done = True
        return self._done

    def parse(self, event: bytes) -> ChatCompletionChunk | None:
        """One event as a chunk; ``None`` for ``[DONE]`` (and for anything after it)."""
        if self._ended(event):
            return None
        try:
            chunk = ChatCompletionChunk.model_validate_json(event)
        except pydantic.ValidationError as exc:
            data = _json_or_none(event)
            if data is None:
                raise ProtocolError(
                    f"malformed stream event: {event[:200]!r}", backend=self._spec.name
                ) from None
            _raise_if_error_object(self._spec, data)
            raise ProtocolError(
                f"stream event is not a chunk: {_first_error(exc)}", backend=self._spec.name
            ) from None
        if chunk.choices and chunk.choices[0].finish_reason is not None:
            self._finished = True
        return chunk


# -- declarations ------------------------------------------------------------------------------


def _openai_configure(spec: BackendSpec, url: URLParts, env: Mapping[str, str]) -> BackendSpec:
    """``openai://``: the organization and project headers the OpenAI SDK reads from the env."""
    from dataclasses import replace

    from llmrouter.config import openai_headers

    return replace(spec, headers=spec.headers + tuple(openai_headers(env)))


BACKENDS = (
    BackendDeclaration(
        "http",
        description="any OpenAI-compatible server",
        default_path="",
        capabilities=CAPABILITIES,
        embeddings=True,
        embeddings_codec="llmrouter.backends.openai_embed",
    ),
    BackendDeclaration(
        "https",
        description="any OpenAI-compatible server, over TLS",
        default_path="",
        transport="https",
        capabilities=CAPABILITIES,
        embeddings=True,
        embeddings_codec="llmrouter.backends.openai_embed",
    ),
    BackendDeclaration(
        "openai",
        description="the OpenAI API",
        default_host="api.openai.com",
        key_env="OPENAI_API_KEY",
        key_required=True,
        transport="https",
        configure=_openai_configure,
        capabilities=CAPABILITIES,
        embeddings=True,
        embeddings_codec="llmrouter.backends.openai_embed",
    ),
    BackendDeclaration(
        "vllm",
        description="vLLM's OpenAI-compatible server",
        default_port=8000,
        key_env="VLLM_API_KEY",
        capabilities=CAPABILITIES,
        embeddings=True,
        embeddings_codec="llmrouter.backends.openai_embed",
    ),
    BackendDeclaration(
        "llamacpp",
        description="llama.cpp's server (llama-server)",
        default_port=8080,
        key_env="LLAMA_API_KEY",
        capabilities=CAPABILITIES,
        embeddings=True,
        embeddings_codec="llmrouter.backends.openai_embed",
    ),
)

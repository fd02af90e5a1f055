"""Codec for Hugging Face Text Embeddings Inference (``tei://host:port``): embeddings only.

Sans-IO. ``POST /embed`` (``{"inputs": str | [str] | [[int]], "normalize": true, "truncate",
"truncation_direction", "prompt_name", "dimensions"}`` -> ``[[float]]``, in input order); the
token count comes back in the ``x-compute-tokens`` header. More inputs than the server's
``--max-client-batch-size`` (32 by default) is a 413; errors are ``{"error", "error_type"}``
(``Validation`` 413/422, ``Tokenizer`` 422, ``Empty`` 400, ``Overloaded`` 429, ``Backend``
424, ``Unhealthy`` 503). TEI's ``/v1/embeddings`` is OpenAI's and works with ``http://``.

A chat request is refused before sending (``InvalidRequestError``): in a chain, chat skips this
backend, as embeddings skip chat-only ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pydantic_core

from llmrouter._embed import EmbeddingRequest, from_vectors
from llmrouter._http import HTTPRequest
from llmrouter._request import ChatRequest
from llmrouter._status import error_from_status
from llmrouter.backends import Capabilities
from llmrouter.backends.declaration import BackendDeclaration, Option
from llmrouter.backends.openai_compat import ChunkDecoder, request_headers
from llmrouter.backends.spec import BackendSpec
from llmrouter.embeddings import CreateEmbeddingResponse, EmbedLimits
from llmrouter.errors import InvalidRequestError, ProtocolError, StatusError
from llmrouter.types import ChatCompletion, ModelList

__all__ = [
    "BACKEND",
    "ChunkDecoder",
    "build_chat",
    "build_embed",
    "build_health",
    "build_models",
    "embed_limits",
    "map_error",
    "parse_chat",
    "parse_embed",
    "parse_models",
]

_JSON = {"Content-Type": "application/json", "Accept": "application/json"}


def embed_limits(spec: BackendSpec) -> EmbedLimits:
    """``?max_batch=`` (the server's ``--max-client-batch-size``), 32 by default."""
    batch = int(dict(spec.options).get("max_batch", "32"))
    return EmbedLimits(max_inputs=batch, token_arrays=True, empty_strings=False)


def build_chat(spec: BackendSpec, request: ChatRequest, model: str) -> HTTPRequest:
    raise InvalidRequestError(
        f"{spec.name}: Text Embeddings Inference serves embeddings only, not chat",
        param="messages",
    )


def parse_chat(spec: BackendSpec, body: bytes) -> ChatCompletion:  # pragma: no cover
    raise ProtocolError("TEI serves no chat", backend=spec.name)


def build_embed(spec: BackendSpec, request: EmbeddingRequest, model: str) -> HTTPRequest:
    """``POST /embed``; the model is the server's (one per TEI process)."""
    body: dict[str, Any] = {"inputs": request.input, "normalize": True}
    truncate = dict(spec.options).get("truncate")
    if truncate is not None:
        body["truncate"] = truncate == "true"
    if request.dimensions is not None:
        body["dimensions"] = request.dimensions
    if request.extra_body:
        body.update(request.extra_body)  # prompt_name, truncation_direction, normalize
    return HTTPRequest(
        method="POST",
        url=spec.base_url + "/embed",
        headers=request_headers(spec, _JSON, request),
        body=pydantic_core.to_json(body),
        backend=spec.name,
    )


def parse_embed(
    spec: BackendSpec, request: EmbeddingRequest, headers: Mapping[str, str], body: bytes
) -> CreateEmbeddingResponse:
    try:
        vectors = pydantic_core.from_json(body)
    except ValueError:
        raise ProtocolError("malformed /embed answer", backend=spec.name) from None
    if not isinstance(vectors, list) or not all(isinstance(v, list) for v in vectors):
        raise ProtocolError(
            "malformed /embed answer: expected a list of vectors", backend=spec.name
        )
    lower = {k.lower(): v for k, v in headers.items()}
    try:
        tokens = int(lower.get("x-compute-tokens", "0"))
    except ValueError:
        tokens = 0
    model = spec.model or request.model or "tei"
    return from_vectors(vectors, model, tokens)


def build_models(spec: BackendSpec) -> HTTPRequest:
    """``GET /info`` (``model_id`` is the one model)."""
    return HTTPRequest(
        method="GET",
        url=spec.base_url + "/info",
        headers=request_headers(spec, {"Accept": "application/json"}, None),
        backend=spec.name,
    )


def parse_models(spec: BackendSpec, body: bytes) -> ModelList:
    try:
        info = pydantic_core.from_json(body)
        model_id = str(info["model_id"])
    except (ValueError, KeyError, TypeError):
        raise ProtocolError("malformed /info answer", backend=spec.name) from None
    return ModelList.model_validate(
        {"object": "list", "data": [{"id": model_id, "object": "model", "owned_by": "tei"}]}
    )


def build_health(spec: BackendSpec) -> HTTPRequest:
    return HTTPRequest(
        method="GET",
        url=spec.base_url + "/health",
        headers=request_headers(spec, {}, None),
        backend=spec.name,
    )


def map_error(
    spec: BackendSpec, status: int, headers: Mapping[str, str], body: bytes
) -> StatusError:
    """``{"error", "error_type"}``; a 413 (too many inputs) is the request's fault (400)."""
    return error_from_status(400 if status == 413 else status, headers, body, backend=spec.name)


BACKEND = BackendDeclaration(
    "tei",
    description="Hugging Face Text Embeddings Inference (/embed)",
    default_port=8080,
    default_path="",
    key_env="TEI_API_KEY",
    options=(
        Option("max_batch", "int", minimum=1, default="32", help="--max-client-batch-size"),
        Option("truncate", "bool", help="truncate inputs longer than the model's limit"),
    ),
    capabilities=Capabilities(
        tools=False, tool_choice=False, json_object=False, json_schema=False, seed=False
    ),
    embeddings=True,
)

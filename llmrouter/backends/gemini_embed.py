"""Embeddings codec for the Gemini API (``gemini://``): ``embedContent`` for one input,
``batchEmbedContents`` for several.

Sans-IO. ``POST /v1beta/models/{m}:embedContent`` with ``{"content": {"parts": [{"text"}]},
"taskType", "outputDimensionality"}`` -> ``{"embedding": {"values": [...]}}``;
``POST /v1beta/models/{m}:batchEmbedContents`` with ``{"requests": [{"model": "models/{m}",
"content": ..., ...}]}`` (at most 100, each naming the same model) -> ``{"embeddings":
[{"values"}]}`` in order (ai.google.dev/api/embeddings). The key goes in ``x-goog-api-key``;
errors map through the chat codec's ``map_error``. Gemini reports no token count for
embeddings: usage is 0. ``extra_body`` fields (``taskType``, ``title``) go into every request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pydantic_core

from llmrouter._embed import EmbeddingRequest, from_vectors
from llmrouter._http import HTTPRequest
from llmrouter.backends.gemini import _headers, _model_path
from llmrouter.backends.spec import BackendSpec
from llmrouter.embeddings import CreateEmbeddingResponse, EmbedLimits
from llmrouter.errors import ProtocolError

__all__ = ["LIMITS", "build_embed", "embed_limits", "parse_embed"]

LIMITS = EmbedLimits(max_inputs=100, token_arrays=False, empty_strings=False)


def embed_limits(spec: BackendSpec) -> EmbedLimits:
    return LIMITS


def _one(request: EmbeddingRequest, text: str, model: str | None) -> dict[str, Any]:
    item: dict[str, Any] = {"content": {"parts": [{"text": text}]}}
    if model is not None:
        item["model"] = model
    if request.dimensions is not None:
        item["outputDimensionality"] = request.dimensions
    if request.extra_body:
        item.update(request.extra_body)
    return item


def build_embed(spec: BackendSpec, request: EmbeddingRequest, model: str) -> HTTPRequest:
    path = _model_path(model)
    if len(request.input) == 1:
        url, body = spec.base_url + path + ":embedContent", _one(request, request.input[0], None)
    else:
        name = path.removeprefix("/")
        url = spec.base_url + path + ":batchEmbedContents"
        body = {"requests": [_one(request, text, name) for text in request.input]}
    return HTTPRequest(
        method="POST",
        url=url,
        headers=_headers(spec, "application/json", request),
        body=pydantic_core.to_json(body),
        backend=spec.name,
    )


def parse_embed(
    spec: BackendSpec, request: EmbeddingRequest, headers: Mapping[str, str], body: bytes
) -> CreateEmbeddingResponse:
    try:
        data = pydantic_core.from_json(body)
        items = data["embeddings"] if "embeddings" in data else [data["embedding"]]
        vectors = [item["values"] for item in items]
    except (ValueError, KeyError, TypeError):
        raise ProtocolError("malformed embedContent answer", backend=spec.name) from None
    model = (spec.model or request.model or "").removeprefix("models/")
    return from_vectors(vectors, model, 0)

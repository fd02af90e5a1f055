"""Embeddings codec for Ollama's native ``POST /api/embed`` (``ollama://``).

Sans-IO. Request ``{"model", "input": [str], "truncate", "dimensions", "keep_alive",
"options"}``; answer ``{"model", "embeddings": [[float]], "total_duration", "load_duration",
"prompt_eval_count"}``, one vector per input in order (docs.ollama.com/api/embed; the legacy
``/api/embeddings`` takes one ``prompt`` and is not used). Ollama's vectors are normalised.
Errors are ``{"error": "<message>"}`` and map through the chat codec's ``map_error``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pydantic_core

from llmrouter._embed import EmbeddingRequest, from_vectors
from llmrouter._http import HTTPRequest
from llmrouter.backends.openai_compat import request_headers
from llmrouter.backends.spec import BackendSpec
from llmrouter.embeddings import CreateEmbeddingResponse, EmbedLimits
from llmrouter.errors import ProtocolError

__all__ = ["LIMITS", "build_embed", "embed_limits", "parse_embed"]

# Ollama runs an input list through one model call; its own batch is the context's, so large
# lists are kept moderate (no documented cap). Text only; "" embeds (to a zero-token vector).
LIMITS = EmbedLimits(max_inputs=256, token_arrays=False, empty_strings=True)


def embed_limits(spec: BackendSpec) -> EmbedLimits:
    return LIMITS


def build_embed(spec: BackendSpec, request: EmbeddingRequest, model: str) -> HTTPRequest:
    """``POST {base}/api/embed``."""
    body: dict[str, Any] = {"model": model, "input": request.input}
    if request.dimensions is not None:
        body["dimensions"] = request.dimensions
    if request.extra_body:
        body.update(request.extra_body)  # truncate, keep_alive, options
    return HTTPRequest(
        method="POST",
        url=spec.base_url + "/api/embed",
        headers=request_headers(
            spec, {"Content-Type": "application/json", "Accept": "application/json"}, request
        ),
        body=pydantic_core.to_json(body),
        backend=spec.name,
    )


def parse_embed(
    spec: BackendSpec, request: EmbeddingRequest, headers: Mapping[str, str], body: bytes
) -> CreateEmbeddingResponse:
    try:
        data = pydantic_core.from_json(body)
        vectors = data["embeddings"]
        model = str(data.get("model") or spec.model or request.model or "")
        tokens = int(data.get("prompt_eval_count") or 0)
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ProtocolError("malformed /api/embed answer", backend=spec.name) from None
    if not isinstance(vectors, list):
        raise ProtocolError("malformed /api/embed answer: no embeddings", backend=spec.name)
    return from_vectors(vectors, model, tokens)

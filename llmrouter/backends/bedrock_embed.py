"""Embeddings codec for Amazon Bedrock (``bedrock://MODEL_ID``): the model's own body through
``InvokeModel`` (``POST /model/{id}/invoke``, SigV4, signing name ``bedrock``).

Sans-IO. Two body families, chosen by the model id (an inference-profile prefix such as
``us.`` is looked through):

* Amazon Titan Text Embeddings (``amazon.titan-embed-text-v1``/``-v2:0``): one text a call,
  ``{"inputText", "dimensions", "normalize": true}`` -> ``{"embedding": [...],
  "inputTextTokenCount"}`` (v1 takes ``inputText`` only). Inputs are sent one per request,
  concurrently on the async client.
* Cohere Embed (``cohere.embed-english-v3``, ``cohere.embed-multilingual-v3``):
  ``{"texts": [...] (at most 96), "input_type": "search_document", "truncate"}`` ->
  ``{"embeddings": [[...]], "id", "response_type": "embeddings_floats", "texts"}``; the token
  count comes in the ``X-Amzn-Bedrock-Input-Token-Count`` header.

``extra_body`` fields go into the body (``input_type="search_query"`` for queries, Titan's
``embeddingTypes``). Errors map through the chat codec's ``map_error``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import pydantic_core

from llmrouter._embed import EmbeddingRequest, from_vectors
from llmrouter._http import HTTPRequest
from llmrouter.backends.bedrock import SIGNING_NAME, _path_id, _region, model_id, runtime_url
from llmrouter.backends.sigv4 import sigv4_headers
from llmrouter.backends.spec import BackendSpec
from llmrouter.embeddings import CreateEmbeddingResponse, EmbedLimits
from llmrouter.errors import InvalidRequestError, ProtocolError

__all__ = ["build_embed", "embed_limits", "family", "parse_embed"]

TITAN = EmbedLimits(max_inputs=1)
COHERE = EmbedLimits(max_inputs=96)


def family(model: str) -> str:
    """``titan``, ``cohere`` or ``""`` (a model whose embeddings body is not known here)."""
    name = model.rsplit("/", 1)[-1]
    parts = name.split(".")
    for i, part in enumerate(parts[:-1]):
        rest = ".".join(parts[i + 1 :])
        if part == "amazon" and rest.startswith("titan-embed"):
            return "titan"
        if part == "cohere" and rest.startswith("embed"):
            return "cohere"
    return ""


def embed_limits(spec: BackendSpec) -> EmbedLimits:
    return COHERE if family(spec.model or spec.location) == "cohere" else TITAN


def build_embed(spec: BackendSpec, request: EmbeddingRequest, model: str) -> HTTPRequest:
    chosen = model_id(spec, model)
    kind = family(chosen)
    body: dict[str, Any]
    if kind == "titan":
        body = {"inputText": request.input[0]}
        if "v2" in chosen:
            body["normalize"] = True
            if request.dimensions is not None:
                body["dimensions"] = request.dimensions
        elif request.dimensions is not None:
            raise InvalidRequestError(f"{chosen}: dimensions needs Titan v2", param="dimensions")
    elif kind == "cohere":
        if request.dimensions is not None:
            raise InvalidRequestError(f"{chosen}: Cohere v3 has no dimensions", param="dimensions")
        body = {"texts": request.input, "input_type": "search_document"}
    else:
        raise InvalidRequestError(
            f"{spec.name}: {chosen} is not an embedding model llmrouter knows the body of "
            "(Titan Text Embeddings, Cohere Embed)",
            param="model",
        )
    if request.extra_body:
        body.update(request.extra_body)
    raw = pydantic_core.to_json(body)
    url = f"{runtime_url(spec)}/model/{_path_id(chosen)}/invoke"
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    headers.update(spec.headers)
    headers.update(request.extra_headers)
    return HTTPRequest(
        method="POST",
        url=url,
        headers=sigv4_headers(spec, url, headers, raw, _region(spec, os.environ), SIGNING_NAME),
        body=raw,
        backend=spec.name,
    )


def parse_embed(
    spec: BackendSpec, request: EmbeddingRequest, headers: Mapping[str, str], body: bytes
) -> CreateEmbeddingResponse:
    model = model_id(spec, request.model)
    try:
        data = pydantic_core.from_json(body)
        if "embedding" in data:
            vectors = [data["embedding"]]
            tokens = int(data.get("inputTextTokenCount") or 0)
        else:
            vectors = data["embeddings"]
            if isinstance(vectors, dict):  # embedding_types given: {"float": [[...]]}
                vectors = vectors["float"]
            lower = {k.lower(): v for k, v in headers.items()}
            tokens = int(lower.get("x-amzn-bedrock-input-token-count", "0") or 0)
    except (ValueError, KeyError, TypeError):
        raise ProtocolError("malformed InvokeModel embeddings answer", backend=spec.name) from None
    return from_vectors(vectors, model, tokens)

"""Embeddings codec for ``POST /v1/embeddings``: OpenAI, vLLM, llama.cpp's server, Ollama's
``/v1``, TEI's ``/v1``, the provider presets, and (with its own URL) Azure.

Sans-IO. The body is openai-python's: ``input``, ``model``, ``dimensions``, ``user``, and
``encoding_format``: when the caller names none, ``base64`` is asked for and decoded, as the
openai SDK does (a third of the bytes of JSON floats, and far less to parse); a server that
ignores the field answers floats, which pass through.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pydantic
import pydantic_core

from llmrouter._embed import EmbeddingRequest
from llmrouter._http import HTTPRequest
from llmrouter.backends.openai_compat import request_headers
from llmrouter.backends.spec import BackendSpec
from llmrouter.embeddings import CreateEmbeddingResponse, EmbedLimits
from llmrouter.errors import ProtocolError

__all__ = ["body_of", "build_embed", "embed_limits", "mean_pool", "parse_embed"]

_JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}

# OpenAI: 2,048 inputs and 300,000 tokens a request (the API reference for embeddings).
OPENAI = EmbedLimits(max_inputs=2048, max_tokens=300_000, token_arrays=True, base64=True)
# llama-cpp-python's server takes strings only (server/types.py CreateEmbeddingRequest) and
# embeds them one by one: smaller parts keep a part's latency down.
LLAMACPP = EmbedLimits(max_inputs=256, token_arrays=False, empty_strings=True, base64=False)
# vLLM takes token ids and base64 (its protocol.py EmbeddingRequest); it batches internally.
VLLM = EmbedLimits(max_inputs=2048, token_arrays=True, base64=True)

_BY_SCHEME = {"openai": OPENAI, "vllm": VLLM, "llamacpp": LLAMACPP}


def embed_limits(spec: BackendSpec) -> EmbedLimits:
    """What one request to this server may carry."""
    return _BY_SCHEME.get(spec.scheme, OPENAI)


def body_of(spec: BackendSpec, request: EmbeddingRequest, model: str) -> dict[str, Any]:
    """The JSON body (``model`` left out when ``model`` is ``""``: the server's default)."""
    inputs: Any = request.input
    body: dict[str, Any] = {"input": inputs}
    if model:
        body["model"] = model
    if request.dimensions is not None:
        body["dimensions"] = request.dimensions
    if request.user is not None:
        body["user"] = request.user
    wire = request.encoding_format or "base64"
    if wire == "base64" and not embed_limits(spec).base64:
        wire = "float"
    body["encoding_format"] = wire
    if request.extra_body:
        body.update(request.extra_body)
    return body


def build_embed(spec: BackendSpec, request: EmbeddingRequest, model: str) -> HTTPRequest:
    """``POST {base_url}/embeddings``."""
    return HTTPRequest(
        method="POST",
        url=spec.base_url + "/embeddings",
        headers=request_headers(spec, _JSON_HEADERS, request),
        body=pydantic_core.to_json(body_of(spec, request, model)),
        backend=spec.name,
    )


def parse_embed(
    spec: BackendSpec, request: EmbeddingRequest, headers: Mapping[str, str], body: bytes
) -> CreateEmbeddingResponse:
    """A 200 body -> :class:`CreateEmbeddingResponse` (vectors as the server sent them)."""
    try:
        return CreateEmbeddingResponse.model_validate_json(body)
    except pydantic.ValidationError as exc:
        from llmrouter.backends.openai_compat import _first_error, _raise_if_error_object

        try:
            data = pydantic_core.from_json(body)
        except ValueError:
            data = None
        _raise_if_error_object(spec, data)
        pooled = _pooled(spec, data)
        if pooled is not None:
            return pooled
        raise ProtocolError(
            f"response is not an embeddings list: {_first_error(exc)}", backend=spec.name
        ) from None


def mean_pool(vectors: list[list[float]]) -> list[float]:
    """The mean of per-token vectors, L2-normalised: llama.cpp's ``--pooling mean`` followed by
    its server's default ``embd_normalize=2``."""
    size = len(vectors[0])
    sums = [0.0] * size
    for vector in vectors:
        for j, value in enumerate(vector):
            sums[j] += value
    norm = sum(v * v for v in sums) ** 0.5 or 1.0
    return [v / norm for v in sums]


def _pooled(spec: BackendSpec, data: Any) -> CreateEmbeddingResponse | None:
    """llama-cpp-python's server on a decoder model (pooling type none, and no server flag to
    set one) answers one vector per *token* for each input; llama.cpp's own server refuses
    that request ("Pooling type 'none' is not OAI compatible"). One input's token vectors are
    mean-pooled here, as ``local://`` pools in process. Several inputs' are not usable:
    llama-cpp-python 0.3 reads every input after the first at the wrong offset (``Llama.embed``
    advances by tokens, not floats), so that answer is refused with what to do instead."""
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        return None
    items = data["data"]
    for item in items:
        vectors = item.get("embedding") if isinstance(item, dict) else None
        if not isinstance(vectors, list) or not vectors:
            return None
        if not all(isinstance(v, list) and v for v in vectors):
            return None
    if len(items) > 1:
        raise ProtocolError(
            "the server answered one vector per token (a decoder model without pooling, as "
            "llama-cpp-python's server serves it) for several inputs, which it misaligns; "
            "add ?embed_batch=1 to the URL to send one input a request, or serve an embedding "
            "model",
            backend=spec.name,
            retryable=False,
        )
    items[0]["embedding"] = mean_pool(items[0]["embedding"])
    try:
        return CreateEmbeddingResponse.model_validate(data)
    except pydantic.ValidationError:
        return None

"""Codec for Azure OpenAI (``azure://RESOURCE.openai.azure.com/DEPLOYMENT?api_version=...``).

The OpenAI chat protocol (reused from ``openai_compat``) with Azure's addressing and auth:

* ``POST {resource}/openai/deployments/{deployment}/chat/completions?api-version=V``; the
  deployment is the model, so the body's ``model`` is always the deployment name (Azure routes
  by the URL; a ``model=`` given to a call is for other backends of a chain);
* the key goes in an ``api-key`` header, never ``Authorization: Bearer``;
* discovery and the health probe use ``GET {resource}/openai/models?api-version=V`` (the
  "Models - List" call of the GA data-plane reference, 2024-10-21). A deployment listing
  (``/openai/deployments``) is not in the current GA data-plane reference (deployments are
  managed through Azure Resource Manager), so it is the riskier route. The models list names
  what the resource *can* deploy, not what this URL serves: the call only proves that the
  resource answers and the key works, and discovery reports the deployment itself;
* Azure's content filter: ``finish_reason: "content_filter"`` passes through; a filtered
  prompt (400, ``{"error": {"code": "content_filter", ...}}``) is a ``BadRequestError`` with
  ``error_type == "content_filter"`` (not retried, no failover); stream chunks that carry only
  filter annotations (``object: ""``, no ``delta``) are normalized into valid chunks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import pydantic
import pydantic_core

from llmrouter._embed import EmbeddingRequest
from llmrouter._http import HTTPRequest
from llmrouter._request import ChatRequest
from llmrouter.backends import Capabilities, openai_compat, openai_embed
from llmrouter.backends.declaration import BackendDeclaration, Option, URLParts
from llmrouter.backends.openai_compat import parse_chat
from llmrouter.config import BackendSpec
from llmrouter.embeddings import EmbedLimits
from llmrouter.errors import ConfigError, ProtocolError, StatusError
from llmrouter.types import ChatCompletionChunk, Model, ModelList

__all__ = [
    "CAPABILITIES",
    "ChunkDecoder",
    "build_chat",
    "build_health",
    "build_models",
    "map_error",
    "parse_chat",
    "parse_models",
]

CAPABILITIES = Capabilities(n=True, logprobs=True)
AZURE_DEFAULT_API_VERSION = "2024-10-21"

_DEPLOYMENTS = "/openai/deployments/"


def _api_version(spec: BackendSpec) -> str:
    return dict(spec.options).get("api_version") or AZURE_DEFAULT_API_VERSION


def _query(spec: BackendSpec) -> str:
    return "?api-version=" + quote(_api_version(spec), safe="")


def _split(spec: BackendSpec) -> tuple[str, str]:
    """(resource root URL, deployment) from ``{root}/openai/deployments/{deployment}``."""
    root, _, deployment = spec.base_url.rpartition(_DEPLOYMENTS)
    return root, deployment


def _with_key(spec: BackendSpec, http: HTTPRequest) -> HTTPRequest:
    # Built without the key (so no Bearer header); api-key goes before nothing the caller set:
    # an api-key in extra_headers wins.
    if spec.api_key is not None and not any(k.lower() == "api-key" for k in http.headers):
        http.headers["api-key"] = spec.api_key.reveal()
    return http


def _keyless(spec: BackendSpec) -> BackendSpec:
    return dataclasses.replace(spec, api_key=None)


def build_chat(spec: BackendSpec, request: ChatRequest, model: str) -> HTTPRequest:
    """The deployment's ``chat/completions`` request; ``model`` is ignored (see module doc)."""
    _, deployment = _split(spec)
    http = openai_compat.build_chat(_keyless(spec), request, deployment)
    http.url += _query(spec)
    return _with_key(spec, http)


def embed_limits(spec: BackendSpec) -> EmbedLimits:
    """Azure OpenAI embedding deployments take OpenAI's 2,048 inputs a request."""
    return openai_embed.OPENAI


def build_embed(spec: BackendSpec, request: EmbeddingRequest, model: str) -> HTTPRequest:
    """The deployment's ``embeddings`` request (``model`` is the deployment, as for chat)."""
    _, deployment = _split(spec)
    http = openai_embed.build_embed(_keyless(spec), request, deployment)
    http.url += _query(spec)
    return _with_key(spec, http)


parse_embed = openai_embed.parse_embed


def build_models(spec: BackendSpec) -> HTTPRequest:
    """``GET {resource}/openai/models?api-version=V``."""
    root, _ = _split(spec)
    http = openai_compat.build_models(_keyless(spec))
    http.url = root + "/openai/models" + _query(spec)
    return _with_key(spec, http)


def build_health(spec: BackendSpec) -> HTTPRequest:
    """The health probe: the models list (resource up, key valid)."""
    return build_models(spec)


def parse_models(spec: BackendSpec, body: bytes) -> ModelList:
    """The one model this backend serves: its deployment (the answer only has to be a list)."""
    try:
        data = pydantic_core.from_json(body)
    except ValueError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise ProtocolError("malformed /openai/models answer: no data list", backend=spec.name)
    _, deployment = _split(spec)
    return ModelList(object="list", data=[Model(id=deployment, owned_by="azure")])


def map_error(
    spec: BackendSpec, status: int, headers: Mapping[str, str], body: bytes
) -> StatusError:
    """OpenAI's status table; Azure's content-filter and request-id conventions on top."""
    error = openai_compat.map_error(spec, status, headers, body)
    if error.request_id is None:
        error.request_id = headers.get("apim-request-id")
    inner = error.body.get("error") if isinstance(error.body, dict) else None
    if isinstance(inner, dict) and error.error_type != "content_filter":
        innererror = inner.get("innererror")
        code = innererror.get("code") if isinstance(innererror, dict) else None
        if inner.get("code") == "content_filter" or code == "ResponsibleAIPolicyViolation":
            error.error_type = "content_filter"
    return error


def _normalize(data: dict[str, Any]) -> dict[str, Any]:
    """Azure's annotation-only chunks -> valid chunks: ``object`` "" and choices without a
    ``delta`` (prompt and asynchronous content-filter results)."""
    choices = [
        {**c, "delta": c.get("delta") or {}} if isinstance(c, dict) else c
        for c in data.get("choices") or []
    ]
    return {**data, "object": "chat.completion.chunk", "choices": choices}


class ChunkDecoder(openai_compat.ChunkDecoder):
    """The OpenAI SSE decoder, accepting Azure's content-filter annotation chunks."""

    __slots__ = ()

    def parse(self, event: bytes) -> ChatCompletionChunk | None:
        """One event as a chunk; ``None`` for ``[DONE]`` (and for anything after it)."""
        try:
            return super().parse(event)
        except ProtocolError:
            try:
                data = pydantic_core.from_json(event)
                if not isinstance(data, dict) or data.get("error"):
                    raise
                chunk = ChatCompletionChunk.model_validate(_normalize(data))
            except (ValueError, pydantic.ValidationError):
                raise ProtocolError(
                    f"stream event is not a chunk: {event[:200]!r}", backend=self._spec.name
                ) from None
        if chunk.choices and chunk.choices[0].finish_reason is not None:
            self._finished = True
        return chunk


def _azure_configure(spec: BackendSpec, url: URLParts, env: Mapping[str, str]) -> BackendSpec:
    """``azure://RESOURCE.openai.azure.com/DEPLOYMENT``: the path names the deployment."""
    deployment = url.path.strip("/")
    if not deployment or "/" in deployment:
        raise ConfigError(
            f"backend URL {spec.name!r}: expected azure://RESOURCE.openai.azure.com/DEPLOYMENT"
        )
    root = spec.base_url[: len(spec.base_url) - len(url.path.rstrip("/"))]
    return dataclasses.replace(spec, base_url=f"{root}/openai/deployments/{deployment}")


BACKEND = BackendDeclaration(
    "azure",
    description="Azure OpenAI",
    default_path="",
    key_env="AZURE_OPENAI_API_KEY",
    key_required=True,
    transport="https",
    options=(Option("api_version", default=AZURE_DEFAULT_API_VERSION, help="the API version"),),
    configure=_azure_configure,
    capabilities=CAPABILITIES,
    embeddings=True,
)

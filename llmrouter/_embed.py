"""Embeddings, the pure part: validate a call, check it against one backend's limits, split it
into parts, merge the parts' answers, base64 as the openai SDK does it, and the rule that keeps
failover inside one embedding space. No I/O; the drivers are ``_async/embeddings.py`` (and the
sync twin generated from it).

The vector-space rule (``docs/embeddings.md``): vectors of two models are not comparable, so an
embeddings request may move only between backends that serve the same model. Two backends are
in the same space when they are replicas of one ``|`` group, when both declare the same
``?embedding_space=``, or when both serve the same model name (the ``?model=`` pin, else the
model the call names). The first backend of the chain that can embed decides the space.
"""

from __future__ import annotations

import array
import base64
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from llmrouter._request import ChatRequest, check_query, split_timeout
from llmrouter.backends.spec import BackendSpec
from llmrouter.embeddings import CreateEmbeddingResponse, Embedding, EmbeddingUsage, EmbedLimits
from llmrouter.errors import InvalidRequestError
from llmrouter.route import Route

__all__ = [
    "EmbeddingRequest",
    "Space",
    "build_embedding_request",
    "check_for_backend",
    "decode_base64",
    "encode_base64",
    "from_vectors",
    "merge",
    "plan_space",
    "split",
]

_CALL_OPTIONS = frozenset(
    {
        "model",
        "dimensions",
        "encoding_format",
        "user",
        "extra_body",
        "extra_headers",
        "extra_query",
        "timeout",
    }
)


@dataclass(slots=True)
class EmbeddingRequest(ChatRequest):
    """A validated ``embeddings.create`` call.

    It is a :class:`ChatRequest` without messages so that the execution module
    (``llmrouter.execution``) drives it unchanged: retries, breakers, deadlines, the budget,
    ``extra_headers``/``extra_query`` and ``with_options`` defaults read the same fields.

    Attributes:
        input: the inputs, always a list: strings, or lists of token ids.
        dimensions: the vector size asked for, if any.
        encoding_format: what the caller asked for (``None``: floats, fetched as base64
            where the backend can send it, as the openai SDK does).
        user: OpenAI's end-user id, if given.
        offset: the index of ``input[0]`` in the caller's list (for a part of a split call).
    """

    input: list[Any] = field(default_factory=list)
    dimensions: int | None = None
    encoding_format: str | None = None
    user: str | None = None
    offset: int = 0

    @property
    def tokens(self) -> bool:
        """The inputs are token arrays."""
        return bool(self.input) and not isinstance(self.input[0], str)


def _fail(message: str, param: str) -> InvalidRequestError:
    return InvalidRequestError(message, param=param)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _inputs(value: Any) -> list[Any]:
    """``input`` as a list of strings or of token-id lists (openai-python's four shapes)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, (bytes, Mapping)) or not isinstance(value, Iterable):
        raise _fail(
            "input: expected a string, a list of strings, a list of token ids or a list of "
            f"token-id lists, got {type(value).__name__}",
            "input",
        )
    items = list(value)
    if not items:
        raise _fail("input: must contain at least one input", "input")
    if all(_is_int(i) for i in items):
        return [items]  # one token array
    if all(isinstance(i, str) for i in items):
        return items
    for i, item in enumerate(items):
        if isinstance(item, str) or not isinstance(item, (list, tuple)):
            raise _fail(
                f"input[{i}]: expected every input to be of one kind (strings, or lists of "
                f"token ids), got {type(item).__name__}",
                "input",
            )
        if not item:
            raise _fail(f"input[{i}]: an empty token list", "input")
        if not all(_is_int(t) and t >= 0 for t in item):
            raise _fail(f"input[{i}]: token ids must be non-negative integers", "input")
    return [list(i) for i in items]


def build_embedding_request(input: Any, kwargs: Mapping[str, Any]) -> EmbeddingRequest:
    """Validate one ``embeddings.create`` call (everything that no backend would accept)."""
    unknown = sorted(k for k in kwargs if k not in _CALL_OPTIONS)
    if unknown:
        raise _fail(
            f"unknown keyword argument(s): {', '.join(unknown)}; engine-specific fields go in "
            "extra_body",
            unknown[0],
        )
    inputs = _inputs(input)
    model = kwargs.get("model")
    if model is not None and (not isinstance(model, str) or not model):
        raise _fail(f"model: expected a non-empty string, got {model!r}", "model")
    dimensions = kwargs.get("dimensions")
    if dimensions is not None and (not _is_int(dimensions) or dimensions < 1):
        raise _fail(f"dimensions: expected a whole number >= 1, got {dimensions!r}", "dimensions")
    encoding = kwargs.get("encoding_format")
    if encoding is not None and encoding not in ("float", "base64"):
        raise _fail(
            f"encoding_format: expected 'float' or 'base64', got {encoding!r}", "encoding_format"
        )
    user = kwargs.get("user")
    if user is not None and not isinstance(user, str):
        raise _fail(f"user: expected a string, got {type(user).__name__}", "user")
    extra_body = kwargs.get("extra_body")
    if extra_body is not None and not isinstance(extra_body, Mapping):
        raise _fail("extra_body: expected a dict", "extra_body")
    extra_headers = kwargs.get("extra_headers")
    if extra_headers is not None and not isinstance(extra_headers, Mapping):
        raise _fail("extra_headers: expected a dict", "extra_headers")
    total, connect, read = split_timeout(kwargs.get("timeout"), _fail)
    return EmbeddingRequest(
        messages=[],
        model=model,
        input=inputs,
        dimensions=dimensions,
        encoding_format=encoding,
        user=user,
        extra_body=dict(extra_body) if extra_body else {},
        extra_headers=dict(extra_headers) if extra_headers else {},
        extra_query=check_query(kwargs.get("extra_query"), _fail, "extra_query"),
        timeout=total,
        connect_timeout=connect,
        read_timeout=read,
    )


def check_for_backend(request: EmbeddingRequest, limits: EmbedLimits, backend: str) -> None:
    """Refuse (``InvalidRequestError``: the backend is skipped) what this backend cannot take."""
    if request.tokens and not limits.token_arrays:
        raise _fail(f"{backend}: this backend takes text inputs only, not token ids", "input")
    if not limits.empty_strings and not request.tokens:
        for i, text in enumerate(request.input):
            if not text:
                raise _fail(
                    f"input[{request.offset + i}]: an empty string (this backend rejects it)",
                    "input",
                )


def estimate_tokens(item: str | list[int]) -> int:
    """A cautious token count without a tokenizer: UTF-8 bytes / 3 (English runs near 4 bytes
    a token, CJK near 3), exact for token arrays."""
    if isinstance(item, str):
        return len(item.encode()) // 3 + 1
    return len(item)


def split(request: EmbeddingRequest, limits: EmbedLimits) -> list[EmbeddingRequest]:
    """``request`` as parts that each fit ``limits`` (one part when it fits), in order."""
    inputs = request.input
    if len(inputs) <= limits.max_inputs and (
        limits.max_tokens is None or sum(map(estimate_tokens, inputs)) <= limits.max_tokens
    ):
        return [request]
    bounds: list[tuple[int, int]] = []
    start = 0
    tokens = 0
    for i, item in enumerate(inputs):
        cost = estimate_tokens(item)
        full = i - start >= limits.max_inputs or (
            limits.max_tokens is not None and tokens + cost > limits.max_tokens
        )
        if full and i > start:
            bounds.append((start, i))
            start, tokens = i, 0
        tokens += cost
    bounds.append((start, len(inputs)))
    return [_part(request, a, b) for a, b in bounds]


def _part(request: EmbeddingRequest, start: int, stop: int) -> EmbeddingRequest:
    return EmbeddingRequest(
        messages=[],
        model=request.model,
        input=request.input[start:stop],
        dimensions=request.dimensions,
        encoding_format=request.encoding_format,
        user=request.user,
        offset=request.offset + start,
        extra_body=request.extra_body,
        extra_headers=request.extra_headers,
        extra_query=request.extra_query,
        timeout=request.timeout,
        connect_timeout=request.connect_timeout,
        read_timeout=request.read_timeout,
        max_retries=request.max_retries,
    )


# -- base64, as openai-python's embeddings.create ----------------------------------------------


def decode_base64(text: str) -> list[float]:
    """Little-endian float32 values from base64 (openai-python without numpy: ``array('f')``)."""
    values = array.array("f", base64.b64decode(text))
    if sys.byteorder == "big":
        values.byteswap()
    return values.tolist()


def encode_base64(vector: Sequence[float]) -> str:
    """The base64 text of ``vector`` as little-endian float32 (what OpenAI sends)."""
    values = array.array("f", vector)
    if sys.byteorder == "big":
        values.byteswap()
    return base64.b64encode(values.tobytes()).decode("ascii")


def finish(response: CreateEmbeddingResponse, request: EmbeddingRequest) -> None:
    """Vectors as the caller asked for them: floats unless ``encoding_format="base64"``."""
    wants_base64 = request.encoding_format == "base64"
    for item in response.data:
        value = item.embedding
        if isinstance(value, str) and not wants_base64:
            item.embedding = decode_base64(value)
        elif wants_base64 and not isinstance(value, str):
            item.embedding = encode_base64(value)


def from_vectors(
    vectors: Sequence[Sequence[float]], model: str, prompt_tokens: int
) -> CreateEmbeddingResponse:
    """A response from plain vectors (the native protocols: Ollama, TEI, Gemini, Bedrock)."""
    data = [
        Embedding.model_construct(embedding=list(v), index=i, object="embedding")
        for i, v in enumerate(vectors)
    ]
    usage = EmbeddingUsage(prompt_tokens=prompt_tokens, total_tokens=prompt_tokens)
    return CreateEmbeddingResponse.model_construct(
        data=data, model=model, object="list", usage=usage
    )


def merge(parts: Sequence[CreateEmbeddingResponse]) -> CreateEmbeddingResponse:
    """One response from the parts' answers, in order: indexes renumbered, usage summed, the
    routes joined (``route.backend`` names every backend that served a part)."""
    if len(parts) == 1:
        return parts[0]
    data: list[Embedding] = []
    prompt = total = 0
    route = Route()
    served: list[str] = []
    for part in parts:
        for item in part.data:
            data.append(
                Embedding.model_construct(
                    embedding=item.embedding, index=len(data), object="embedding"
                )
            )
        prompt += part.usage.prompt_tokens
        total += part.usage.total_tokens
        route.attempts.extend(part.route.attempts)
        if part.route.backend and part.route.backend not in served:
            served.append(part.route.backend)
    route.backend = ", ".join(served)
    merged = CreateEmbeddingResponse.model_construct(
        data=data,
        model=parts[0].model,
        object="list",
        usage=EmbeddingUsage(prompt_tokens=prompt, total_tokens=total),
    )
    merged.route = route
    return merged


def check_answer(response: CreateEmbeddingResponse, request: EmbeddingRequest) -> None:
    """One vector per input, in order (servers sort by ``index``; a few do not)."""
    if len(response.data) != len(request.input):
        from llmrouter.errors import ProtocolError

        raise ProtocolError(f"asked for {len(request.input)} embeddings, got {len(response.data)}")
    if any(item.index != i for i, item in enumerate(response.data)):
        response.data.sort(key=lambda item: item.index)


# -- the vector-space rule --------------------------------------------------------------------


def space_key(spec: BackendSpec, model: str | None) -> str | None:
    """What names this backend's embedding space: ``?embedding_space=``, else the model it
    serves (pinned, else the call's); ``None`` when unknown before asking the server."""
    if spec.embedding_space:
        return f"embedding_space={spec.embedding_space}"
    name = spec.model or model
    return f"model={name}" if name else None


@dataclass(slots=True)
class Space:
    """The members one embeddings request may use, and those it refuses.

    Attributes:
        allowed: indexes (into the chain's members) of the backends in the request's space.
        refused: ``(backend name, reason)`` for each backend that can embed but is elsewhere.
        name: the space, for messages (``model=nomic-embed-text``, or the first backend).
    """

    allowed: list[int]
    refused: list[tuple[str, str]]
    name: str


def plan_space(
    groups: Sequence[Sequence[tuple[int, BackendSpec]]],
    can_embed: Sequence[bool],
    model: str | None,
) -> Space:
    """Which members serve the request's space. ``groups``: the chain's ``|`` groups in order,
    each as ``(member index, spec)``; ``can_embed[index]``: the backend declares embeddings.

    Raises:
        InvalidRequestError: no backend of the chain serves embeddings.
    """
    primary: Sequence[tuple[int, BackendSpec]] | None = None
    for group in groups:
        if any(can_embed[i] for i, _ in group):
            primary = group
            break
    if primary is None:
        names = ", ".join(spec.name for group in groups for _, spec in group)
        raise InvalidRequestError(
            f"no backend of this chain serves embeddings ({names}); see the embeddings column "
            "of docs/backends/capabilities.md",
            param="model",
        )
    keys = {k for i, spec in primary if can_embed[i] and (k := space_key(spec, model))}
    key = min(keys) if keys else None
    allowed = [i for i, _ in primary if can_embed[i]]
    first = next(spec for i, spec in primary if can_embed[i])
    name = key or f"of {first.name}"
    refused: list[tuple[str, str]] = []
    for group in groups:
        if group is primary:
            continue
        for i, spec in group:
            if not can_embed[i]:
                continue
            other = space_key(spec, model)
            if key is not None and other in keys:
                allowed.append(i)
            elif other is None:
                refused.append((spec.name, "its model is not known before asking (no ?model=)"))
            else:
                refused.append((spec.name, f"serves {other}, not {name}"))
    return Space(allowed, refused, name)

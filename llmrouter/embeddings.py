"""Embeddings: the OpenAI-shaped response (:class:`CreateEmbeddingResponse`), the two errors
that only embeddings raise, and :class:`EmbedLimits`, what a backend declares about its batches.

Field names follow openai-python's ``types/create_embedding_response.py`` and
``types/embedding.py``; like every llmrouter response, the route (which backend served) rides
beside the JSON as ``resp.route``, never inside ``model_dump()``. ``docs/embeddings.md`` says how
requests are split, run and failed over.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from llmrouter.errors import AllBackendsFailedError, LLMRouterError
from llmrouter.types import _Base, _Routed

if TYPE_CHECKING:
    from llmrouter.route import Attempt

__all__ = [
    "CreateEmbeddingResponse",
    "EmbedLimits",
    "Embedding",
    "EmbeddingBatchError",
    "EmbeddingSpaceError",
    "EmbeddingUsage",
]


class Embedding(_Base):
    """One vector: ``embedding`` is a list of floats, or the base64 text of little-endian
    float32 values when the call asked for ``encoding_format="base64"`` (as in the openai SDK,
    which hands back what was asked for)."""

    embedding: list[float] | str
    index: int
    object: Literal["embedding"] = "embedding"


class EmbeddingUsage(_Base):
    """Token counts of an embeddings request (openai's ``create_embedding_response.Usage``)."""

    prompt_tokens: int = 0
    total_tokens: int = 0


class CreateEmbeddingResponse(_Routed):
    """The answer of ``POST /v1/embeddings``: one :class:`Embedding` per input, in order."""

    data: list[Embedding]
    model: str
    object: Literal["list"] = "list"
    usage: EmbeddingUsage = EmbeddingUsage()


@dataclass(frozen=True, slots=True)
class EmbedLimits:
    """What one embeddings request to a backend may carry; larger inputs are split.

    Attributes:
        max_inputs: inputs per request (OpenAI: 2,048).
        max_tokens: estimated tokens per request, all inputs together (OpenAI: 300,000);
            ``None``: no limit besides ``max_inputs``.
        token_arrays: the backend accepts inputs given as lists of token ids.
        empty_strings: the backend accepts ``""`` as an input.
        base64: the backend can send vectors as base64 (``encoding_format="base64"``).
    """

    max_inputs: int = 2048
    max_tokens: int | None = None
    token_arrays: bool = False
    empty_strings: bool = False
    base64: bool = False


class EmbeddingSpaceError(AllBackendsFailedError):
    """The backends that serve the request's embedding model all failed, and the others were
    not tried: their vectors belong to another model's space and would not be comparable.

    Attributes:
        attempts: what was tried (the backends of the request's embedding space).
        refused: ``(backend, reason)`` for every backend that could embed but was not used.
    """

    def __init__(self, attempts: list[Attempt], refused: list[tuple[str, str]], space: str) -> None:
        super().__init__(attempts)
        self.refused = refused
        self.space = space
        lines = [
            f"every backend of the embedding space {space} failed; not failing over to "
            f"{len(refused)} backend(s) of another space (vectors of different models are "
            "not comparable):"
        ]
        lines += [f"  - {name}: {reason}" for name, reason in refused]
        lines.append(
            "  Give backends that serve the same model the same ?model=, put them in one "
            "'|' group, or declare ?embedding_space=NAME on each."
        )
        lines.append(str(self))  # what was tried, one attempt a line
        Exception.__init__(self, "\n".join(lines))


class EmbeddingBatchError(LLMRouterError):
    """One part of an input list split into several requests failed; the whole request fails
    (no partial result is returned). The part's own error is ``error`` (and ``__cause__``).

    Attributes:
        part: the failed part's index (0-based) among ``parts``.
        parts: how many parts the input was split into.
        start: the index of the part's first input in the caller's list.
        stop: one past the index of its last input.
        error: what the part raised.
    """

    def __init__(self, part: int, parts: int, start: int, stop: int, error: BaseException) -> None:
        self.part = part
        self.parts = parts
        self.start = start
        self.stop = stop
        self.error = error
        text = getattr(error, "message", None) or str(error)
        super().__init__(
            f"embeddings part {part + 1} of {parts} (inputs {start}..{stop - 1}) failed: "
            f"{type(error).__name__}: {text}"
        )

"""Embeddings with llama.cpp in this process (``local://``): a second ``Llama`` opened with
``embedding=True`` beside the chat one (llama.cpp fixes the mode when a context is made), shared
per process like the chat engine and loaded on the first embeddings request.

Pooling, as llama.cpp's server does it: a model whose GGUF declares a pooling type (BERT-style
embedding models: mean or CLS) is pooled the model's way; a decoder model (SmolLM2, Llama)
declares none, and llama.cpp would then return one vector per *token*, so the context is made
with mean pooling (``?pooling=`` is not needed: the GGUF is read for ``{arch}.pooling_type``
first, vocabulary only). Every vector is L2-normalised (the server's default
``embd_normalize=2``): each input gets exactly one unit vector.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

from llmrouter.backends._engines import EngineRegistry
from llmrouter.backends.llamacpp import resolve_model_path
from llmrouter.backends.spec import BackendSpec
from llmrouter.embeddings import EmbedLimits
from llmrouter.errors import BackendError, ConfigError, ContextLengthError, MissingDependencyError

__all__ = ["LIMITS", "LlamaEmbedder", "acquire_embedder", "release_embedder"]

# llama.cpp embeds a list in batches of its own (n_batch tokens); parts this size keep one
# request's latency bounded. Text only.
LIMITS = EmbedLimits(max_inputs=64, token_arrays=False, empty_strings=False)


class LlamaEmbedder:
    """One ``Llama(embedding=True)`` and the lock that serialises its use."""

    def __init__(self, path: str, options: dict[str, str]) -> None:
        try:
            import llama_cpp
        except ImportError:
            raise MissingDependencyError("llama-cpp-python", "local", "local://") from None
        kwargs: dict[str, Any] = {"verbose": False, "embedding": True}
        for key in ("n_ctx", "n_threads", "n_gpu_layers", "n_batch"):
            if key in options:
                try:
                    kwargs[key] = int(options[key])
                except ValueError:
                    raise ConfigError(
                        f"local:// option {key}={options[key]!r}: expected an integer"
                    ) from None
        kwargs.setdefault("n_ctx", 2048)
        # One batch holds a whole context: an input up to n_ctx tokens embeds in one decode.
        kwargs.setdefault("n_batch", kwargs["n_ctx"])
        kwargs.setdefault("n_ubatch", kwargs["n_batch"])
        self.path = path
        self.model_name = os.path.basename(path).removesuffix(".gguf")
        self.lock = threading.Lock()
        self.users = 0
        if not _declares_pooling(path):
            kwargs["pooling_type"] = llama_cpp.LLAMA_POOLING_TYPE_MEAN
        self.llama: Any = llama_cpp.Llama(model_path=path, **kwargs)

    def embed(self, texts: list[str], backend: str) -> tuple[list[list[float]], int]:
        """One unit vector per text, and the tokens read."""
        with self.lock:
            try:
                data, tokens = self.llama.embed(
                    texts, normalize=True, truncate=False, return_count=True
                )
            except ValueError as exc:  # "Requested tokens (N) exceed batch size of M"
                raise ContextLengthError(str(exc), backend=backend, status_code=400) from exc
            except RuntimeError as exc:
                raise BackendError(str(exc), backend=backend, retryable=False) from exc
        return data, int(tokens)

    def close(self) -> None:
        self.llama.close()


def _declares_pooling(path: str) -> bool:
    """Whether the GGUF names its pooling (``bert.pooling_type``...): read vocabulary only."""
    import llama_cpp

    meta = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False).metadata
    arch = meta.get("general.architecture", "")
    return f"{arch}.pooling_type" in meta


@dataclass(frozen=True, slots=True)
class _Key:
    path: str
    options: tuple[tuple[str, str], ...]


_registry: EngineRegistry[LlamaEmbedder] = EngineRegistry()


def acquire_embedder(spec: BackendSpec) -> LlamaEmbedder:
    """The shared embedder for ``spec``, loading it on first use (slow: call from a thread)."""
    path = os.path.realpath(resolve_model_path(spec))
    options = tuple((k, v) for k, v in spec.options if k not in ("file", "chat_format"))
    return _registry.acquire(_Key(path, options), lambda: LlamaEmbedder(path, dict(options)))


def release_embedder(embedder: LlamaEmbedder) -> None:
    """Drop one user; the last one frees the model."""
    _registry.release(embedder)

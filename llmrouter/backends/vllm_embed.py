"""Embeddings with vLLM in this process (``vllm+local://``): the pooling runner.

An embedding model (a BERT-style encoder such as all-MiniLM-L6-v2, or a decoder converted with
``?runner=pooling``) is served by ``AsyncLLM.encode(prompt, PoolingParams(task="embed"))`` on
the engine's own loop; each input is one request, so vLLM batches them itself. The vectors are
what vLLM's ``/v1/embeddings`` returns (normalised where the model's pooler normalises).
"""

from __future__ import annotations

import uuid
from typing import Any

from llmrouter._concurrency import GenerationWatch
from llmrouter.backends.vllm_engine import VLLMEngine, map_error
from llmrouter.embeddings import EmbedLimits
from llmrouter.errors import BackendError, InvalidRequestError

__all__ = ["LIMITS", "embed"]

LIMITS = EmbedLimits(max_inputs=2048, token_arrays=True, empty_strings=True)


async def _one(
    engine: VLLMEngine, prompt: Any, params: Any, backend: str
) -> tuple[list[float], int]:
    request_id = f"llmrouter-embed-{uuid.uuid4().hex}"
    final = None
    try:
        async for out in engine.llm.encode(prompt, params, request_id):
            final = out
    except (InvalidRequestError, BackendError):
        raise
    except Exception as exc:
        if type(exc).__name__ == "EngineDeadError":
            engine.dead = True
        raise map_error(exc, backend) from exc
    if final is None:
        raise BackendError("vLLM returned no embedding", backend=backend)
    data = final.outputs.data
    vector = data.tolist() if hasattr(data, "tolist") else list(data)
    return [float(v) for v in vector], len(final.prompt_token_ids or ())


async def embed(
    engine: VLLMEngine,
    inputs: list[Any],
    dimensions: int | None,
    backend: str,
    watch: GenerationWatch | None = None,
) -> tuple[list[list[float]], int]:
    """One vector per input and the prompt tokens; runs on ``engine.loop``."""
    import asyncio  # lazily: the sync client imports this module without an event loop

    from vllm import PoolingParams

    try:
        params = PoolingParams(task="embed", dimensions=dimensions)
    except Exception as exc:
        raise map_error(exc, backend) from exc
    prompts = [
        {"prompt": item} if isinstance(item, str) else {"prompt_token_ids": item} for item in inputs
    ]
    work = asyncio.gather(*(_one(engine, p, params, backend) for p in prompts))
    limit = None if watch is None else watch.remaining()
    try:
        results = await (work if limit is None else asyncio.wait_for(work, limit))
    except asyncio.TimeoutError:
        assert watch is not None
        raise watch.timeout() from None
    return [vector for vector, _ in results], sum(tokens for _, tokens in results)

"""Embeddings from real engines, on real vectors: llama-cpp-python's server started with
``--embedding`` (SmolLM2, a decoder), ``local://`` in process (the same GGUF, mean-pooled),
vLLM's pooling runner in process (``vllm+local://``) and vLLM's OpenAI server, both on
all-MiniLM-L6-v2 (384 dimensions, normalised). Each asserts the shape (one vector per input),
unit norm, and that a sentence is closer to its paraphrase than to an unrelated one.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence

import pytest

import llmrouter
from llmrouter import InvalidRequestError
from llmrouter._embed import decode_base64
from llmrouter.errors import ProtocolError

SENTENCE = "The cat sat on the mat."
PARAPHRASE = "A cat was sitting on the mat."
UNRELATED = "Quarterly revenue grew by five percent."
TEXTS = [SENTENCE, PARAPHRASE, UNRELATED]


def cos(a: Sequence[float], b: Sequence[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / (
        math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    )


def check_vectors(vectors: list[list[float]], dim: int) -> None:
    assert len(vectors) == 3 and all(len(v) == dim for v in vectors)
    for v in vectors:
        assert math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, rel_tol=1e-3)
    assert cos(vectors[0], vectors[1]) > cos(vectors[0], vectors[2]) + 0.1


def floats(resp: llmrouter.embeddings.CreateEmbeddingResponse) -> list[list[float]]:
    out = []
    for item in resp.data:
        assert isinstance(item.embedding, list)
        out.append(item.embedding)
    return out


# -- llama.cpp: the server with --embedding, and local:// in process -------------------------


@pytest.fixture(scope="module")
def local_vectors() -> Iterator[list[list[float]]]:
    with llmrouter.Client("local://smollm2") as client:
        resp = client.embeddings.create(input=TEXTS)
        assert resp.usage.prompt_tokens > 0
        yield floats(resp)


@pytest.mark.local_engine
def test_local_pools_one_vector_per_input(local_vectors: list[list[float]]) -> None:
    check_vectors(local_vectors, 576)  # SmolLM2-135M's hidden size


@pytest.mark.local_engine
async def test_local_async_matches_sync(local_vectors: list[list[float]]) -> None:
    async with llmrouter.AsyncClient("local://smollm2") as client:
        resp = await client.embeddings.create(input=[PARAPHRASE])
    assert cos(floats(resp)[0], local_vectors[1]) > 0.9999


@pytest.mark.llama_server
@pytest.mark.local_engine
def test_llama_server_with_embedding(
    llama_embed_server: str, local_vectors: list[list[float]]
) -> None:
    # One input a request: llama-cpp-python's per-token answer for several inputs is broken
    # upstream, and the codec says so (test below).
    with llmrouter.Client(f"{llama_embed_server}?embed_batch=1") as client:
        resp = client.embeddings.create(input=TEXTS)
    vectors = floats(resp)
    check_vectors(vectors, 576)
    # The server's per-token vectors, mean-pooled by the client, are local://'s vectors.
    for served, local in zip(vectors, local_vectors, strict=True):
        assert cos(served, local) > 0.999
    assert resp.usage.prompt_tokens > 0


@pytest.mark.llama_server
def test_llama_server_per_token_batches_are_refused(llama_embed_server: str) -> None:
    with llmrouter.Client(llama_embed_server) as client, pytest.raises(ProtocolError) as info:
        client.embeddings.create(input=TEXTS)
    assert "embed_batch=1" in str(info.value)
    # llamacpp:// knows the server takes strings only (no request is sent for token ids).
    hostport = llama_embed_server.removeprefix("http://").removesuffix("/v1")
    with (
        llmrouter.Client(f"llamacpp://{hostport}") as client,
        pytest.raises(InvalidRequestError, match="text inputs only"),
    ):
        client.embeddings.create(input=[[1, 2, 3]], model="x")


# -- vLLM on CPU with all-MiniLM-L6-v2: in process and its OpenAI server ----------------------


@pytest.fixture(scope="module")
def vllm_local_embed(embed_model: str) -> Iterator[str]:
    from tests.conftest import VLLM_ENV

    os.environ.update(VLLM_ENV)
    url = f"vllm+local://{embed_model}?max_model_len=256&enforce_eager=true&runner=pooling"
    holder = llmrouter.Client(url)
    holder.embeddings.create(input="warm up")  # starts the engine (~25 s)
    yield url
    holder.close()


@pytest.mark.vllm
def test_vllm_local_pooling_runner(vllm_local_embed: str) -> None:
    with llmrouter.Client(vllm_local_embed) as client:
        resp = client.embeddings.create(input=TEXTS)
        tokens = client.embeddings.create(input=[[101, 7592, 2088, 102]])
        short = client.embeddings.create(input=SENTENCE, encoding_format="base64")
    check_vectors(floats(resp), 384)
    assert resp.usage.prompt_tokens > 0 and len(floats(tokens)[0]) == 384
    text = short.data[0].embedding
    assert isinstance(text, str) and cos(decode_base64(text), floats(resp)[0]) > 0.9999


@pytest.mark.vllm
async def test_vllm_local_async_batches(vllm_local_embed: str) -> None:
    async with llmrouter.AsyncClient(f"{vllm_local_embed}&embed_batch=2") as client:
        resp = await client.embeddings.create(input=TEXTS * 2)
    vectors = floats(resp)
    assert len(vectors) == 6 and [d.index for d in resp.data] == list(range(6))
    check_vectors(vectors[:3], 384)
    assert cos(vectors[0], vectors[3]) > 0.9999


@pytest.mark.vllm
def test_vllm_server_embeddings(vllm_embed_server: str, vllm_local_embed: str) -> None:
    with llmrouter.Client(vllm_local_embed) as local:
        expected = floats(local.embeddings.create(input=TEXTS))
    # vllm:// discovers the served model; base64 goes over the wire and is decoded.
    url = vllm_embed_server.removeprefix("http://").removesuffix("/v1")
    with llmrouter.Client(f"vllm://{url}") as client:
        resp = client.embeddings.create(input=TEXTS)
        tokens = client.embeddings.create(input=[101, 7592, 102])
    vectors = floats(resp)
    check_vectors(vectors, 384)
    assert resp.model == "minilm" and resp.usage.prompt_tokens > 0
    assert len(floats(tokens)[0]) == 384
    for served, local in zip(vectors, expected, strict=True):
        assert cos(served, local) > 0.999


@pytest.mark.vllm
def test_vllm_server_through_the_openai_sdk_shape(vllm_embed_server: str) -> None:
    openai = pytest.importorskip("openai")
    sdk = openai.OpenAI(base_url=vllm_embed_server, api_key="x", max_retries=0)
    theirs = sdk.embeddings.create(input=TEXTS, model="minilm")
    with llmrouter.Client(f"{vllm_embed_server}?model=minilm") as client:
        ours = client.embeddings.create(input=TEXTS)
    assert ours.model_dump().keys() == theirs.model_dump().keys()
    for a, b in zip(ours.data, theirs.data, strict=True):
        assert a.index == b.index and cos(a.embedding, b.embedding) > 0.99999  # type: ignore[arg-type]

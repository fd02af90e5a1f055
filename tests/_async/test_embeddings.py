"""``client.embeddings.create`` over loopback fakes: the OpenAI shape, base64 as the openai SDK
does it, validation before sending, batching (split, order, usage, concurrency, the failed
part named), and failover that never mixes vector spaces (same ``?model=``, ``|`` groups,
``?embedding_space=``, the typed refusal). The native dialects (Ollama, TEI, Azure, Gemini)
have their own round trips here too; real engines are in ``test_embeddings_engines.py``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest

from llmrouter import AsyncClient, InvalidRequestError
from llmrouter._embed import decode_base64
from llmrouter.embeddings import (
    CreateEmbeddingResponse,
    EmbeddingBatchError,
    EmbeddingSpaceError,
)
from llmrouter.errors import BadRequestError, RateLimitError
from llmrouter.policy import RetryPolicy
from tests.fakes.embed_fake import EmbedFake, vector

NO_WAIT = RetryPolicy.testing()
NO_RETRY = RetryPolicy.testing(max_retries=0)


@pytest.fixture
def fake() -> Iterator[EmbedFake]:
    with EmbedFake("openai") as server:
        yield server


@pytest.fixture
def other() -> Iterator[EmbedFake]:
    with EmbedFake("openai", salt="other model") as server:
        yield server


def url(fake: EmbedFake, query: str = "model=m") -> str:
    return f"http://{fake.base}/v1?{query}"


async def test_openai_shape_and_route(fake: EmbedFake) -> None:
    async with AsyncClient(url(fake), retry_policy=NO_WAIT) as client:
        resp = await client.embeddings.create(input=["a b", "c"], model="m")
    assert isinstance(resp, CreateEmbeddingResponse)
    assert resp.object == "list" and resp.model == "m"
    assert [d.index for d in resp.data] == [0, 1]
    assert resp.data[0].embedding == vector("a b") and resp.data[1].embedding == vector("c")
    assert resp.usage.prompt_tokens == 3 and resp.usage.total_tokens == 3
    assert resp.route.backend == fake_name(fake)
    assert "route" not in resp.model_dump()
    # Floats were asked for as base64 on the wire (the openai SDK's default) and decoded.
    assert fake.requests[-1].body["encoding_format"] == "base64"


def fake_name(fake: EmbedFake) -> str:
    return url(fake)


async def test_explicit_base64_is_returned_as_text(fake: EmbedFake) -> None:
    async with AsyncClient(url(fake)) as client:
        resp = await client.embeddings.create(input="hello", encoding_format="base64")
        floats = await client.embeddings.create(input="hello", encoding_format="float")
    text = resp.data[0].embedding
    assert isinstance(text, str)
    assert decode_base64(text) == vector("hello")
    assert floats.data[0].embedding == vector("hello")
    assert fake.requests[-1].body["encoding_format"] == "float"


async def test_one_string_and_token_arrays(fake: EmbedFake) -> None:
    async with AsyncClient(url(fake)) as client:
        one = await client.embeddings.create(input="x", dimensions=4, user="u1")
        tokens = await client.embeddings.create(input=[1, 2, 3])
        many = await client.embeddings.create(input=[[1, 2], [3]])
    assert len(one.data) == 1 and len(one.data[0].embedding) == 4
    body = fake.requests[0].body
    assert body["dimensions"] == 4 and body["user"] == "u1" and body["input"] == ["x"]
    assert len(tokens.data) == 1 and fake.requests[1].body["input"] == [[1, 2, 3]]
    assert len(many.data) == 2


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"input": []}, "input"),
        ({"input": 3}, "input"),
        ({"input": [["a"]]}, "input"),
        ({"input": ["a", 1]}, "input"),
        ({"input": [[]]}, "input"),
        ({"input": b"bytes"}, "input"),
        ({"input": "a", "dimensions": 0}, "dimensions"),
        ({"input": "a", "dimensions": True}, "dimensions"),
        ({"input": "a", "encoding_format": "int8"}, "encoding_format"),
        ({"input": "a", "model": ""}, "model"),
        ({"input": "a", "temperature": 1}, "temperature"),
    ],
)
async def test_bad_input_is_refused_before_sending(
    fake: EmbedFake, kwargs: dict[str, object], param: str
) -> None:
    async with AsyncClient(url(fake)) as client:
        with pytest.raises(InvalidRequestError) as info:
            await client.embeddings.create(**kwargs)  # type: ignore[arg-type]
    assert info.value.param == param
    assert fake.requests == []


async def test_empty_string_refused_where_the_backend_rejects_it(fake: EmbedFake) -> None:
    async with AsyncClient(url(fake)) as client:
        with pytest.raises(InvalidRequestError, match=r"input\[1\]: an empty string"):
            await client.embeddings.create(input=["a", ""])
    assert fake.requests == []


async def test_a_large_list_is_split_concurrently_in_order(fake: EmbedFake) -> None:
    fake.delay = 0.02
    texts = [f"text {i}" for i in range(1000)]
    async with AsyncClient(url(fake, "model=m&embed_batch=100")) as client:
        resp = await client.embeddings.create(input=texts)
    assert len(fake.requests) == 10
    assert all(len(r.body["input"]) == 100 for r in fake.requests)
    assert [d.index for d in resp.data] == list(range(1000))
    assert all(d.embedding == vector(t) for d, t in zip(resp.data, texts, strict=True))
    assert resp.usage.prompt_tokens == 2000 and resp.usage.total_tokens == 2000
    # if async
    assert 1 < fake.max_in_flight <= 8
    # endif


async def test_the_default_limit_is_openais_2048(fake: EmbedFake) -> None:
    async with AsyncClient(url(fake)) as client:
        resp = await client.embeddings.create(input=["w"] * 5000)
    assert sorted(len(r.body["input"]) for r in fake.requests) == [904, 2048, 2048]
    assert len(resp.data) == 5000


async def test_a_failed_part_fails_the_request_and_says_which(fake: EmbedFake) -> None:
    async with AsyncClient(url(fake, "model=m&embed_batch=2"), retry_policy=NO_RETRY) as client:
        fake.fail(400)
        with pytest.raises(EmbeddingBatchError) as info:
            await client.embeddings.create(input=["a", "b", "c", "d", "e"])
    error = info.value
    assert error.parts == 3 and isinstance(error.error, BadRequestError)
    assert (error.stop - error.start) in (1, 2) and str(error).startswith("embeddings part")


async def test_retries_apply_to_embeddings(fake: EmbedFake) -> None:
    fake.fail(429, times=2, headers={"retry-after": "0"})
    async with AsyncClient(url(fake), retry_policy=NO_WAIT) as client:
        resp = await client.embeddings.create(input="a")
    assert len(resp.route.attempts) == 3 and resp.route.attempts[-1].error is None


async def test_fails_over_within_the_same_model(fake: EmbedFake) -> None:
    with EmbedFake("openai") as replica:
        chain = f"{url(fake)}, {url(replica)}"
        fake.fail(503, times=5)
        async with AsyncClient(chain, retry_policy=NO_RETRY) as client:
            resp = await client.embeddings.create(input="a")
    assert resp.route.backend == url(replica)
    assert resp.data[0].embedding == vector("a")


async def test_never_fails_over_to_another_model(fake: EmbedFake, other: EmbedFake) -> None:
    chain = f"{url(fake, 'model=nomic-embed-text')}, {url(other, 'model=text-embedding-3-small')}"
    fake.fail(503, times=5)
    async with AsyncClient(chain, retry_policy=NO_RETRY) as client:
        with pytest.raises(EmbeddingSpaceError) as info:
            await client.embeddings.create(input="a")
    error = info.value
    assert other.requests == []
    assert error.refused[0][0] == url(other, "model=text-embedding-3-small")
    assert "text-embedding-3-small" in str(error) and "embedding_space" in str(error)
    assert len(error.attempts) == 1


async def test_an_unknown_model_is_not_assumed_the_same(fake: EmbedFake, other: EmbedFake) -> None:
    chain = f"{url(fake, 'model=a')}, http://{other.base}/v1"
    fake.fail(503, times=5)
    async with AsyncClient(chain, retry_policy=NO_RETRY) as client:
        with pytest.raises(EmbeddingSpaceError, match="not known before asking"):
            await client.embeddings.create(input="a")


async def test_embedding_space_declares_two_names_the_same_model(
    fake: EmbedFake, other: EmbedFake
) -> None:
    chain = (
        f"{url(fake, 'model=nomic-embed-text&embedding_space=nomic')}, "
        f"{url(other, 'model=nomic-ai/nomic-embed-text-v1.5&embedding_space=nomic')}"
    )
    fake.fail(503, times=5)
    async with AsyncClient(chain, retry_policy=NO_RETRY) as client:
        resp = await client.embeddings.create(input="a")
    assert resp.route.backend.startswith(f"http://{other.base}")
    assert resp.route.failovers == 1


async def test_replicas_of_a_group_are_one_space(fake: EmbedFake, other: EmbedFake) -> None:
    chain = f"http://{fake.base}/v1 | http://{other.base}/v1"
    fake.fail(503, times=5)
    other.fail(503, times=5)
    async with AsyncClient(chain, retry_policy=NO_RETRY) as client:
        with pytest.raises(Exception) as info:
            await client.embeddings.create(input="a")
    assert not isinstance(info.value, EmbeddingSpaceError)
    posts = [r for r in fake.requests + other.requests if r.method == "POST"]
    assert len(posts) == 2  # both replicas were tried


async def test_a_400_does_not_fail_over_and_is_not_a_space_error(
    fake: EmbedFake, other: EmbedFake
) -> None:
    fake.fail(400)
    async with AsyncClient(f"{url(fake, 'model=a')}, {url(other, 'model=b')}") as client:
        with pytest.raises(BadRequestError):
            await client.embeddings.create(input="a")


async def test_chat_only_backends_are_skipped(fake: EmbedFake) -> None:
    chain = f"tgi://{fake.base}?model=x, {url(fake)}"
    async with AsyncClient(chain, retry_policy=NO_WAIT) as client:
        resp = await client.embeddings.create(input="a")
    assert resp.route.backend == url(fake)


async def test_no_embedding_backend_is_an_invalid_request() -> None:
    async with AsyncClient("tgi://127.0.0.1:9?model=x") as client:
        with pytest.raises(InvalidRequestError, match="no backend of this chain serves"):
            await client.embeddings.create(input="a")


async def test_rate_limit_exhausted_on_one_backend_keeps_its_typed_error(fake: EmbedFake) -> None:
    fake.fail(429, times=5, headers={"retry-after": "0"})
    async with AsyncClient(url(fake), retry_policy=NO_WAIT) as client:
        with pytest.raises(RateLimitError):
            await client.embeddings.create(input="a")


def test_vectors_are_unit_length() -> None:
    assert math.isclose(sum(v * v for v in vector("x")), 1.0, rel_tol=1e-5)

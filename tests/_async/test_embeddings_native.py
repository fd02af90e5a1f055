"""Embeddings over each native dialect's loopback fake: Ollama ``/api/embed``, TEI ``/embed``,
Azure's deployment path, Gemini ``embedContent``/``batchEmbedContents``, Bedrock Titan and
Cohere through ``InvokeModel`` (SigV4 verified by botocore in the fake). Each checks the wire
body, the vectors, the usage, and the split to the dialect's batch limit.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from llmrouter import AsyncClient, InvalidRequestError
from llmrouter.backends import bedrock
from llmrouter.errors import RateLimitError
from llmrouter.policy import RetryPolicy
from tests.fakes.bedrock_embed_fake import COHERE, TITAN, BedrockEmbedFake
from tests.fakes.bedrock_fake import ACCESS_KEY, SECRET_KEY
from tests.fakes.embed_fake import EmbedFake, vector

NO_WAIT = RetryPolicy.testing()


def posts(fake: EmbedFake) -> list[Any]:
    return [r for r in fake.requests if r.method == "POST"]


async def test_ollama_native_api_embed() -> None:
    with EmbedFake("ollama", model="nomic-embed-text") as fake:
        url = f"ollama://{fake.base}?model=nomic-embed-text"
        async with AsyncClient(url) as client:
            resp = await client.embeddings.create(
                input=["a b", "", "c"], dimensions=4, extra_body={"truncate": False}
            )
    body = posts(fake)[0].body
    assert posts(fake)[0].path == "/api/embed"
    assert body == {"model": "nomic-embed-text", "input": ["a b", "", "c"], "dimensions": 4,
                    "truncate": False}  # fmt: skip
    assert [len(d.embedding) for d in resp.data] == [4, 4, 4]
    assert resp.usage.prompt_tokens == 3 and resp.model == "nomic-embed-text"


async def test_ollama_refuses_token_arrays_before_sending() -> None:
    with EmbedFake("ollama") as fake:
        async with AsyncClient(f"ollama://{fake.base}?model=m") as client:
            with pytest.raises(InvalidRequestError, match="text inputs only"):
                await client.embeddings.create(input=[[1, 2]])
    assert posts(fake) == []


async def test_tei_embed_splits_to_its_batch_limit_and_reads_the_token_header() -> None:
    with EmbedFake("tei", model="BAAI/bge-small-en-v1.5") as fake:
        async with AsyncClient(f"tei://{fake.base}") as client:
            texts = [f"t {i}" for i in range(70)]
            resp = await client.embeddings.create(input=texts)
            with pytest.raises(InvalidRequestError, match="embeddings only"):
                await client.chat.completions.create(messages=[{"role": "user", "content": "x"}])
    assert [len(r.body["inputs"]) for r in posts(fake)] == [32, 32, 6]
    assert posts(fake)[0].body["normalize"] is True
    assert [d.embedding for d in resp.data] == [vector(t) for t in texts]
    assert resp.usage.prompt_tokens == 140


async def test_tei_413_is_a_bad_request_and_max_batch_is_an_option() -> None:
    with EmbedFake("tei") as fake:
        fake.max_batch = 4
        async with AsyncClient(f"tei://{fake.base}?max_batch=8", retry_policy=NO_WAIT) as c:
            with pytest.raises(Exception) as info:
                await c.embeddings.create(input=["x"] * 8)
        assert "413" in str(info.value) or "batch size" in str(info.value)
        async with AsyncClient(f"tei://{fake.base}?max_batch=4") as c:
            resp = await c.embeddings.create(input=["x"] * 8)
    assert len(resp.data) == 8


async def test_chat_skips_tei_in_a_chain() -> None:
    with EmbedFake("tei") as tei, EmbedFake("ollama") as ollama:
        chain = f"tei://{tei.base}, ollama://{ollama.base}?model=m"
        async with AsyncClient(chain, retry_policy=NO_WAIT) as client:
            with pytest.raises(Exception):  # noqa: B017 (the fake Ollama has no chat)
                await client.chat.completions.create(messages=[{"role": "user", "content": "x"}])
    # TEI was skipped (nothing sent); the embeddings-only fake Ollama has no /api/chat route.
    assert posts(tei) == [] and [r.path for r in posts(ollama)] == ["/api/chat"]


@pytest.fixture
def azure_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "azure-secret")


@pytest.mark.usefixtures("azure_key")
async def test_azure_deployment_embeddings() -> None:
    with EmbedFake("openai") as fake:
        url = f"azure+http://{fake.base}/embed-deploy?api_version=2024-10-21"
        async with AsyncClient(url) as client:
            resp = await client.embeddings.create(input=["hello"])
    request = posts(fake)[0]
    assert request.path == "/openai/deployments/embed-deploy/embeddings"
    assert request.query == {"api-version": ["2024-10-21"]}
    assert request.headers["api-key"] == "azure-secret" and "authorization" not in request.headers
    assert request.body["model"] == "embed-deploy"
    assert resp.data[0].embedding == vector("hello")


@pytest.fixture
def gemini_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "AIza-test")


@pytest.mark.usefixtures("gemini_key")
async def test_gemini_embed_content_and_batches_of_100() -> None:
    with EmbedFake("gemini") as fake:
        url = f"gemini+http://{fake.base}?model=gemini-embedding-001"
        async with AsyncClient(url) as client:
            one = await client.embeddings.create(input="hello", dimensions=4)
            many = await client.embeddings.create(
                input=[f"x{i}" for i in range(150)], extra_body={"taskType": "RETRIEVAL_DOCUMENT"}
            )
    single, *batches = posts(fake)
    assert single.path == "/v1beta/models/gemini-embedding-001:embedContent"
    assert single.headers["x-goog-api-key"] == "AIza-test"
    assert single.body == {"content": {"parts": [{"text": "hello"}]}, "outputDimensionality": 4}
    assert len(one.data[0].embedding) == 4
    assert [b.path.rsplit(":", 1)[1] for b in batches] == ["batchEmbedContents"] * 2
    assert sorted(len(b.body["requests"]) for b in batches) == [50, 100]
    first = batches[0].body["requests"][0]
    assert first["model"] == "models/gemini-embedding-001"
    assert first["taskType"] == "RETRIEVAL_DOCUMENT"
    assert [d.embedding for d in many.data] == [vector(f"x{i}") for i in range(150)]


@pytest.mark.usefixtures("gemini_key")
async def test_gemini_rate_limit_is_typed() -> None:
    with EmbedFake("gemini") as fake:
        fake.fail(429, times=3)
        url = f"gemini+http://{fake.base}?model=gemini-embedding-001&max_retries=0"
        async with AsyncClient(url, retry_policy=NO_WAIT) as client:
            with pytest.raises(RateLimitError):
                await client.embeddings.create(input="a")


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[None]:
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    bedrock.reset_credentials()
    yield
    bedrock.reset_credentials()


@pytest.mark.usefixtures("aws")
async def test_bedrock_titan_one_input_a_call() -> None:
    with BedrockEmbedFake() as fake:
        async with AsyncClient(fake.url(TITAN)) as client:
            resp = await client.embeddings.create(input=["a b", "c", "d e f"], dimensions=8)
    assert sorted(b["inputText"] for b in fake.invocations) == ["a b", "c", "d e f"]
    assert all(b["normalize"] is True and b["dimensions"] == 8 for b in fake.invocations)
    assert [d.embedding for d in resp.data] == [vector(t) for t in ["a b", "c", "d e f"]]
    assert resp.usage.prompt_tokens == 6 and fake.auth_failures == []


@pytest.mark.usefixtures("aws")
async def test_bedrock_cohere_batches_of_96_and_the_token_header() -> None:
    with BedrockEmbedFake() as fake:
        async with AsyncClient(fake.url(COHERE)) as client:
            texts = [f"w{i}" for i in range(100)]
            resp = await client.embeddings.create(
                input=texts, extra_body={"input_type": "search_query"}
            )
            with pytest.raises(InvalidRequestError, match="no dimensions"):
                await client.embeddings.create(input="x", dimensions=4)
    assert sorted(len(b["texts"]) for b in fake.invocations) == [4, 96]
    assert all(b["input_type"] == "search_query" for b in fake.invocations)
    assert [d.embedding for d in resp.data] == [vector(t) for t in texts]
    assert resp.usage.prompt_tokens == 100


@pytest.mark.usefixtures("aws")
async def test_bedrock_chat_model_is_refused_for_embeddings() -> None:
    with BedrockEmbedFake() as fake:
        async with AsyncClient(fake.url("anthropic.claude-3-haiku-20240307-v1:0")) as client:
            with pytest.raises(InvalidRequestError, match="not an embedding model"):
                await client.embeddings.create(input="x")
    assert fake.invocations == []

"""``POST /v1/embeddings`` on the gateway, driven by the openai SDK (which asks for base64 and
decodes it): the vectors, auth, token rate limits charged with the real usage, the body size
limit, metrics and the access log; the backend is the embeddings loopback fake."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx2
import openai
import pytest

from llmrouter.server import KeyStore
from tests.fakes.embed_fake import EmbedFake, vector
from tests.test_gateway import KEY, GatewayThread, settings


@pytest.fixture
def fake() -> Iterator[EmbedFake]:
    with EmbedFake("openai", model="minilm") as server:
        yield server


def test_openai_sdk_embeddings_through_the_gateway(
    fake: EmbedFake, caplog: pytest.LogCaptureFixture
) -> None:
    keys = KeyStore([("team-a", KEY)])
    backend = f"http://{fake.base}/v1?model=minilm"
    with (
        GatewayThread(settings(backend, keys=keys)) as gw,
        caplog.at_level(logging.INFO, logger="llmrouter"),
    ):
        sdk = openai.OpenAI(base_url=gw.base, api_key=KEY, max_retries=0)
        resp = sdk.embeddings.create(input=["a b", "c"], model="minilm")
        floats = sdk.embeddings.create(input="d", model="minilm", encoding_format="float")
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=gw.base, api_key="wrong", max_retries=0).embeddings.create(
                input="x", model="minilm"
            )
        with pytest.raises(openai.BadRequestError) as info:
            sdk.embeddings.create(input=[], model="minilm")
        metrics = httpx2.get(gw.url + "/metrics", timeout=10).text
    assert [d.embedding for d in resp.data] == [vector("a b"), vector("c")]
    assert resp.usage.prompt_tokens == 3 and resp.model == "minilm"
    assert floats.data[0].embedding == vector("d")
    assert "input" in str(info.value)
    assert 'path="/v1/embeddings",status="200"' in metrics
    assert any("/v1/embeddings" in r.getMessage() for r in caplog.records)


def test_token_limit_and_body_limit_apply(fake: EmbedFake) -> None:
    backend = f"http://{fake.base}/v1?model=minilm"
    with GatewayThread(settings(backend, tokens_per_minute=20, max_body_bytes=4096)) as gw:
        url = gw.base + "/embeddings"
        first = httpx2.post(url, json={"input": ["w"] * 30}, timeout=10)
        assert first.status_code == 200  # 30 tokens used: in debt now
        second = httpx2.post(url, json={"input": "w"}, timeout=10)
        assert second.status_code == 429
        assert "tokens per minute" in second.json()["error"]["message"]
        big = httpx2.post(url, json={"input": "x" * 10_000}, timeout=10)
        assert big.status_code == 413

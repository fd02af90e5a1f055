"""A mixed chain of commercial APIs failing over for real: Bedrock (429) -> Gemini (5xx) ->
the embedded llama.cpp model, each through its own wire protocol and fake."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from llmrouter import AsyncClient, RateLimitError, ServerError
from llmrouter.backends import bedrock
from llmrouter.policy import RetryPolicy
from tests.fakes import bedrock_fake, gemini_fake
from tests.fakes.bedrock_fake import AwsError, BedrockFake
from tests.fakes.gemini_fake import GeminiFake, GoogleError

pytestmark = pytest.mark.local_engine

MESSAGES = [{"role": "user", "content": "Say hi."}]


@pytest.fixture
def chain(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> Iterator[tuple[BedrockFake, GeminiFake, str]]:
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_REGION", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", bedrock_fake.ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", bedrock_fake.SECRET_KEY)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("GEMINI_API_KEY", gemini_fake.API_KEY)
    bedrock.reset_credentials()
    with BedrockFake() as aws, GeminiFake() as google:
        yield aws, google, f"{aws.url()}, {google.url()}, local://smollm2"
    bedrock.reset_credentials()


@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "stream"])
async def test_bedrock_then_gemini_then_local(
    chain: tuple[BedrockFake, GeminiFake, str], streamed: bool
) -> None:
    aws, google, url = chain
    aws.script(AwsError(429, "ThrottlingException", "Too many requests"))
    google.script(GoogleError(503, "UNAVAILABLE", "The model is overloaded."))
    async with AsyncClient(url, retry_policy=RetryPolicy.testing(max_retries=0)) as client:
        if streamed:
            stream = await client.chat.completions.create(
                messages=MESSAGES, max_tokens=8, stream=True
            )
            async with stream:
                text = "".join(
                    [c.choices[0].delta.content or "" async for c in stream if c.choices]
                )
            route = stream.route
        else:
            resp = await client.chat.completions.create(messages=MESSAGES, max_tokens=8)
            text = resp.choices[0].message.content or ""
            route = resp.route
    assert text
    assert [type(a.error) for a in route.attempts] == [RateLimitError, ServerError, type(None)]
    assert route.backend == "local://smollm2"
    assert len(aws.converse_requests) == 1 and len(google.generate_requests) == 1
    assert aws.auth_failures == []

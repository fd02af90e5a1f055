"""The commercial backends behind the gateway: the openai SDK talks to ``llmrouter serve`` in
front of Bedrock (SigV4-checking fake) and Gemini (key-checking fake), plain and streamed, and
a Bedrock 429 fails over to Gemini."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from llmrouter.backends import bedrock
from tests._async.test_bedrock import _CLEARED
from tests.fakes.bedrock_fake import ACCESS_KEY, SECRET_KEY, AwsError, BedrockFake
from tests.fakes.gemini_fake import API_KEY, GeminiFake
from tests.test_gateway import GatewayThread, settings

HI = [{"role": "user", "content": "Hello there, fake."}]


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[None]:
    for name in _CLEARED:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", API_KEY)
    bedrock.reset_credentials()
    yield
    bedrock.reset_credentials()


@pytest.fixture
def fakes() -> Iterator[tuple[BedrockFake, GeminiFake]]:
    with BedrockFake() as aws, GeminiFake() as google:
        yield aws, google


def test_openai_sdk_through_the_gateway_to_bedrock_and_gemini(
    fakes: tuple[BedrockFake, GeminiFake],
) -> None:
    aws, google = fakes
    for url in (aws.url(), google.url()):
        with GatewayThread(settings(url)) as gw:
            sdk = openai.OpenAI(base_url=gw.base, api_key="unused", max_retries=0)
            resp = sdk.chat.completions.create(model="m", messages=HI, max_tokens=20)  # type: ignore[arg-type]
            assert resp.choices[0].message.content
            assert resp.usage is not None and resp.usage.total_tokens > 0
            stream = sdk.chat.completions.create(
                model="m",
                messages=HI,  # type: ignore[arg-type]
                stream=True,
            )
            text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            assert text == resp.choices[0].message.content


def test_a_bedrock_429_fails_over_to_gemini_behind_the_gateway(
    fakes: tuple[BedrockFake, GeminiFake],
) -> None:
    aws, google = fakes
    aws.script(AwsError(429, "ThrottlingException", "Too many requests"))
    with GatewayThread(settings(f"{aws.url()}, {google.url()}")) as gw:
        sdk = openai.OpenAI(base_url=gw.base, api_key="unused", max_retries=0)
        resp = sdk.chat.completions.with_raw_response.create(
            model="m",
            messages=HI,  # type: ignore[arg-type]
        )
        assert resp.parse().choices[0].message.content
    assert len(aws.converse_requests) == 1
    assert len(google.generate_requests) == 1

"""Amazon Bedrock (``bedrock://``) end to end against the loopback fake: Converse and
ConverseStream over real sockets, real SigV4 signatures (checked by the fake with botocore),
real event-stream frames split at arbitrary byte boundaries. The fake:
``tests/fakes/bedrock_fake.py``; what was relied on: ``docs/backends/bedrock.md``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from llmrouter import (
    AsyncClient,
    AuthenticationError,
    BackendConnectionError,
    BadRequestError,
    ContextLengthError,
    NotFoundError,
    RateLimitError,
    ServerError,
    StatusError,
    StreamInterruptedError,
)
from llmrouter.backends import bedrock
from llmrouter.policy import RetryPolicy
from tests.fakes.bedrock_fake import (
    ACCESS_KEY,
    ARN,
    MODEL,
    PROFILE,
    SECRET_KEY,
    AwsError,
    BedrockFake,
    Reply,
    text_reply,
)

NO_RETRY = RetryPolicy.testing(max_retries=0)
HI = [{"role": "user", "content": "Hello there, fake."}]
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="  # noqa: E501
_CLEARED = (
    "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_REGION",
    "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_BEDROCK",
    "AWS_ENDPOINT_URL_BEDROCK_RUNTIME", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN",
)  # fmt: skip


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[None]:
    for name in _CLEARED:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    bedrock.reset_credentials()
    yield
    bedrock.reset_credentials()


@pytest.fixture
def fake() -> Iterator[BedrockFake]:
    with BedrockFake() as server:
        yield server


async def collect(url: str, **kw: Any) -> tuple[list[Any], str]:
    async with AsyncClient(url, retry_policy=NO_RETRY) as c:
        stream = await c.chat.completions.create(stream=True, **kw)
        chunks = []
        async with stream:
            async for chunk in stream:
                chunks.append(chunk)
        return chunks, stream.text


async def test_converse_is_signed_and_shaped(fake: BedrockFake) -> None:
    messages = [{"role": "system", "content": "Be brief."}, *HI]
    async with AsyncClient(fake.url(), retry_policy=NO_RETRY) as c:
        resp = await c.chat.completions.create(
            messages=messages, max_tokens=20, temperature=0.5, top_p=0.9, stop=["zzz"]
        )
    assert resp.choices[0].message.content == "Echo: Hello there, fake."
    assert resp.choices[0].finish_reason == "stop"
    assert resp.model == MODEL
    assert fake.auth_failures == []
    sent = fake.converse_requests[-1]
    assert sent.path == f"/model/{MODEL}/converse"
    assert "/us-east-1/bedrock/aws4_request" in sent.headers["authorization"]
    assert sent.json["system"] == [{"text": "Be brief."}]
    assert sent.json["inferenceConfig"] == {
        "maxTokens": 20, "temperature": 0.5, "topP": 0.9, "stopSequences": ["zzz"]
    }  # fmt: skip


@pytest.mark.parametrize("model", [PROFILE, ARN])
async def test_inference_profiles_and_arns_name_the_model(fake: BedrockFake, model: str) -> None:
    for url in (fake.url(quote(model, safe="")), fake.url("", model=model)):
        async with AsyncClient(url, retry_policy=NO_RETRY) as c:
            resp = await c.chat.completions.create(messages=HI)
        assert resp.choices[0].message.content
        _, text = await collect(url, messages=HI)
        assert text == resp.choices[0].message.content
    assert fake.auth_failures == []
    # The ARN's "/" travels encoded: the path names one model, and the signature covers it.
    assert all(r.path.count("/") == 3 for r in fake.converse_requests)


async def test_stream_split_anywhere_assembles(fake: BedrockFake) -> None:
    for seed in range(5):
        fake.script(text_reply("Hel", "lo ", "wor", "ld", seed=seed))
        chunks, text = await collect(fake.url(), messages=HI)
        assert text == "Hello world"
        finishing = [c for c in chunks if c.choices and c.choices[0].finish_reason]
        assert len(finishing) == 1 and finishing[0].usage.total_tokens == 12


async def test_parallel_tool_calls_and_results(fake: BedrockFake) -> None:
    uses = [
        {"toolUse": {"toolUseId": f"t{i}", "name": "get_weather", "input": {"city": c}}}
        for i, c in enumerate(["Paris", "Rome"])
    ]
    tools = [
        {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    ]
    fake.script(
        Reply(content=uses, stop_reason="tool_use"), Reply(content=uses, stop_reason="tool_use")
    )
    async with AsyncClient(fake.url(), retry_policy=NO_RETRY) as c:
        resp = await c.chat.completions.create(messages=HI, tools=tools)
    calls = resp.choices[0].message.tool_calls
    assert [call.id for call in calls] == ["t0", "t1"] and resp.choices[
        0
    ].finish_reason == "tool_calls"
    chunks, _ = await collect(fake.url(), messages=HI, tools=tools)
    ids = [tc.id for ch in chunks for tc in (ch.choices[0].delta.tool_calls or []) if tc.id]
    assert ids == ["t0", "t1"]
    follow = [
        *HI,
        resp.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": "t0", "content": "18C"},
        {"role": "tool", "tool_call_id": "t1", "content": "21C"},
    ]
    async with AsyncClient(fake.url(), retry_policy=NO_RETRY) as c:
        again = await c.chat.completions.create(messages=follow, tools=tools)
    assert again.choices[0].message.content == "Tool said: 21C"
    last = fake.converse_requests[-1].json["messages"][-1]
    assert [b["toolResult"]["toolUseId"] for b in last["content"]] == ["t0", "t1"]


async def test_base64_image_is_sent_as_bytes(fake: BedrockFake) -> None:
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
    ]
    async with AsyncClient(fake.url(), retry_policy=NO_RETRY) as c:
        await c.chat.completions.create(messages=[{"role": "user", "content": content}])
    image = fake.converse_requests[-1].json["messages"][0]["content"][1]
    assert image == {"image": {"format": "png", "source": {"bytes": PNG}}}


@pytest.mark.parametrize(
    ("error", "expected", "retryable"),
    [
        (AwsError(429, "ThrottlingException", "Too many requests"), RateLimitError, True),
        (AwsError(400, "ServiceQuotaExceededException", "quota"), RateLimitError, True),
        (AwsError(429, "ModelNotReadyException", "loading"), ServerError, True),
        (AwsError(503, "ServiceUnavailableException", "later"), ServerError, True),
        (AwsError(500, "InternalServerException", "oops"), ServerError, True),
        (AwsError(408, "ModelTimeoutException", "slow"), ServerError, True),
        (
            AwsError(400, "ValidationException", "Input is too long for requested model."),
            ContextLengthError,
            False,
        ),
        (AwsError(400, "ValidationException", "Malformed input request"), BadRequestError, False),
        (
            AwsError(403, "AccessDeniedException", "no access to the model"),
            AuthenticationError,
            False,
        ),
        (AwsError(404, "ResourceNotFoundException", "no such model"), NotFoundError, False),
    ],
)
@pytest.mark.parametrize("streamed", [False, True])
async def test_error_table(
    fake: BedrockFake, error: AwsError, expected: type[StatusError], retryable: bool, streamed: bool
) -> None:
    fake.script(error)
    with pytest.raises(StatusError) as info:
        if streamed:
            await collect(fake.url(), messages=HI)
        else:
            async with AsyncClient(fake.url(), retry_policy=NO_RETRY) as c:
                await c.chat.completions.create(messages=HI)
    assert type(info.value) is expected
    assert info.value.retryable is retryable
    assert info.value.error_type == error.code
    assert info.value.request_id


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("modelStreamErrorException", ServerError),
        ("throttlingException", RateLimitError),
        ("internalServerException", ServerError),
        ("serviceUnavailableException", ServerError),
        ("validationException", BadRequestError),
    ],
)
async def test_in_stream_exceptions_are_typed(fake: BedrockFake, kind: str, expected: type) -> None:
    # Before any content: the typed error itself (and it may fail over).
    fake.script(Reply(content=[], failure=(kind, "broke")))
    with pytest.raises(expected):
        await collect(fake.url(), messages=HI)
    # After content: an interruption carrying the typed error and the partial text.
    fake.script(text_reply("Hel", "lo", failure=(kind, "broke")))
    with pytest.raises(StreamInterruptedError) as info:
        await collect(fake.url(), messages=HI)
    assert info.value.partial_text == "Hello"
    assert type(info.value.__cause__) is expected


async def test_bad_signature_and_unknown_model(
    fake: BedrockFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(NotFoundError):
        async with AsyncClient(fake.url("no.such-v1:0"), retry_policy=NO_RETRY) as c:
            await c.chat.completions.create(messages=HI)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong/secret")
    bedrock.reset_credentials()
    with pytest.raises(AuthenticationError):
        async with AsyncClient(fake.url(), retry_policy=NO_RETRY) as c:
            await c.chat.completions.create(messages=HI)
    assert fake.auth_failures[-1][0] == "InvalidSignatureException"


async def test_cut_stream_is_a_connection_error(fake: BedrockFake) -> None:
    fake.script(Reply(content=[], cut=True))
    with pytest.raises(BackendConnectionError):
        await collect(fake.url(), messages=HI)

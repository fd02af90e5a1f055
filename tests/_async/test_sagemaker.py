"""The SageMaker endpoint backend (``sagemaker://``) end to end, against the loopback fake.

Real sockets, the default transports, the public client API, real SigV4 signatures (checked by
the fake with botocore). Protocol facts: ``shared/protocols/sagemaker.md``; the fake:
``tests/fakes/sagemaker_fake.py``. Credentials are fixed test keys in the environment; the
instance metadata service is disabled, so botocore never touches the network.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest

from llmrouter import (
    AsyncClient,
    AuthenticationError,
    BackendConnectionError,
    BackendTimeoutError,
    BadRequestError,
    ConfigError,
    ContextLengthError,
    NotFoundError,
    ProtocolError,
    RateLimitError,
    ServerError,
    StreamInterruptedError,
)
from llmrouter.backends import sagemaker
from llmrouter.config import BackendSpec
from llmrouter.policy import RetryPolicy
from tests.fakes.sagemaker_fake import (
    ACCESS_KEY,
    ENDPOINT,
    REQUEST_ID,
    SECRET_KEY,
    SESSION_TOKEN,
    AwsError,
    Invoked,
    SageMakerFake,
    Streamed,
    StreamFailure,
    jsonlines_chat,
    model_error,
    sse_chat,
    token_events,
)

NO_RETRY = RetryPolicy.testing(max_retries=0)
HI = [{"role": "user", "content": "Hello there, fake."}]
ECHO = "Echo: Hello there, fake."

_ENV_CLEARED = (
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_SAGEMAKER",
    "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
)


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[None]:
    """Fixed test credentials, no config files, no metadata service."""
    for name in _ENV_CLEARED:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    sagemaker.reset_credentials()
    yield
    sagemaker.reset_credentials()


@pytest.fixture
def fake() -> Iterator[SageMakerFake]:
    with SageMakerFake() as server:
        yield server


def client(spec: BackendSpec, retry: RetryPolicy = NO_RETRY) -> AsyncClient:
    return AsyncClient(backends=[spec], retry_policy=retry)


async def collect(c: AsyncClient, **kw: Any) -> list[str]:
    stream = await c.chat.completions.create(messages=HI, stream=True, **kw)
    texts: list[str] = []
    async with stream:
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                texts.append(chunk.choices[0].delta.content)
    return texts


# ---------------------------------------------------------------------------------------------
# The messages dialect (default)


async def test_chat_is_a_signed_invoke_endpoint(fake: SageMakerFake) -> None:
    async with client(fake.spec()) as c:
        resp = await c.chat.completions.create(messages=HI, max_tokens=20, temperature=0.5)
    assert resp.choices[0].message.content == ECHO
    assert resp.usage is not None and resp.usage.total_tokens == 12
    assert resp.route.backend == fake.spec().name
    assert fake.auth_failures == []
    sent = fake.invocations[-1]
    assert sent.path == f"/endpoints/{ENDPOINT}/invocations"
    # The endpoint name labels the backend; it is not a model name for the container.
    assert sent.json == {"messages": HI, "max_tokens": 20, "temperature": 0.5}
    assert sent.headers["content-type"] == "application/json"
    assert sent.headers["accept"] == "application/json"
    assert sent.headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/")
    assert "/us-east-1/sagemaker/aws4_request" in sent.headers["authorization"]
    assert "x-amz-date" in sent.headers
    assert "x-amz-security-token" not in sent.headers


async def test_stream_sse_payload(fake: SageMakerFake) -> None:
    async with client(fake.spec()) as c:
        texts = await collect(c)
    assert "".join(texts) == ECHO
    sent = fake.invocations[-1]
    assert sent.path == f"/endpoints/{ENDPOINT}/invocations-response-stream"
    assert sent.json["stream"] is True
    assert "application/jsonlines" in sent.headers["x-amzn-sagemaker-accept"]
    assert "accept" not in sent.headers or sent.headers["accept"] != "application/json"
    assert fake.auth_failures == []


async def test_stream_jsonlines_payload(fake: SageMakerFake) -> None:
    fake.stream_flavour = "jsonlines"
    async with client(fake.spec()) as c:
        texts = await collect(c)
    assert "".join(texts) == ECHO


@pytest.mark.parametrize("flavour", ["sse", "jsonlines"])
async def test_payload_parts_split_anywhere(fake: SageMakerFake, flavour: str) -> None:
    # One-byte PayloadParts (multi-byte characters cut in half), frames cut on the wire too.
    texts = ("Grüße, ", "wörld ", "🌍!")
    output = sse_chat(*texts) if flavour == "sse" else jsonlines_chat(*texts)
    fake.script(Streamed(output, parts=[1] * len(output), wire_split=7))
    fake.script(Streamed(output, max_part=40, seed=3))
    async with client(fake.spec()) as c:
        assert "".join(await collect(c)) == "".join(texts)
        assert "".join(await collect(c)) == "".join(texts)


async def test_explicit_model_is_sent(fake: SageMakerFake) -> None:
    async with client(fake.spec(model="meta-llama/Llama-3.1-8B-Instruct")) as c:
        await c.chat.completions.create(messages=HI)
    async with client(fake.spec()) as c:
        await c.chat.completions.create(messages=HI, model="lora-adapter-1")
    assert fake.invocations[0].json["model"] == "meta-llama/Llama-3.1-8B-Instruct"
    assert fake.invocations[1].json["model"] == "lora-adapter-1"


async def test_component_variant_and_custom_attributes_headers(fake: SageMakerFake) -> None:
    spec = fake.spec(component="llama-ic", variant="blue", custom_attributes="trace=1;tenant=a b")
    async with client(spec) as c:
        await c.chat.completions.create(messages=HI)
        await collect(c, extra_headers={"X-Amzn-SageMaker-Session-Id": "sess-1"})
    assert fake.auth_failures == []  # every sagemaker header was signed
    for sent in fake.invocations:
        assert sent.headers["x-amzn-sagemaker-inference-component"] == "llama-ic"
        assert sent.headers["x-amzn-sagemaker-target-variant"] == "blue"
        assert sent.headers["x-amzn-sagemaker-custom-attributes"] == "trace=1;tenant=a b"
        assert "model" not in sent.json  # the component names the model
    assert fake.invocations[1].headers["x-amzn-sagemaker-session-id"] == "sess-1"
    assert "x-amzn-sagemaker-session-id" in fake.invocations[1].headers["authorization"]


@pytest.mark.parametrize("variable", ["AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", "AWS_ENDPOINT_URL"])
async def test_endpoint_url_from_the_environment(
    fake: SageMakerFake, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, fake.endpoint_url + "/")
    async with client(fake.spec(endpoint_url="")) as c:
        resp = await c.chat.completions.create(messages=HI)
    assert resp.choices[0].message.content == ECHO


async def test_region_from_the_environment(
    fake: SageMakerFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    async with client(fake.spec(region="")) as c:
        resp = await c.chat.completions.create(messages=HI)
    assert resp.choices[0].message.content == ECHO


async def test_temporary_credentials_send_a_signed_token(
    fake: SageMakerFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)
    async with client(fake.spec()) as c:
        await c.chat.completions.create(messages=HI)
    sent = fake.invocations[-1]
    assert sent.headers["x-amz-security-token"] == SESSION_TOKEN
    assert "x-amz-security-token" in sent.headers["authorization"]
    assert fake.auth_failures == []


async def test_models_and_discovery_use_describe_endpoint(
    fake: SageMakerFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER", fake.endpoint_url)
    spec = fake.spec()
    async with client(spec) as c:
        models = await c.models.list()
    assert [m.id for m in models.data] == [ENDPOINT]
    assert fake.requests[-1].headers["x-amz-target"] == "SageMaker.DescribeEndpoint"
    unpinned = dataclasses.replace(spec, model=None)
    async with client(unpinned) as c:
        resp = await c.chat.completions.create(messages=HI)
    assert resp.choices[0].message.content == ECHO
    assert "model" not in fake.invocations[-1].json
    assert fake.auth_failures == []


# ---------------------------------------------------------------------------------------------
# The tgi dialect


async def test_tgi_dialect_chat(fake: SageMakerFake) -> None:
    messages = [{"role": "system", "content": "Be brief."}, *HI]
    async with client(fake.spec(dialect="tgi")) as c:
        resp = await c.chat.completions.create(
            messages=messages, max_tokens=12, temperature=0, stop="END"
        )
    assert resp.choices[0].message.content == ECHO
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None and resp.usage.completion_tokens == 3
    assert resp.model == ENDPOINT
    assert fake.invocations[-1].json == {
        "inputs": "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHello there, fake.<|im_end|>\n<|im_start|>assistant\n",
        "parameters": {"details": True, "max_new_tokens": 12, "do_sample": False, "stop": ["END"]},
        "stream": False,
    }


async def test_tgi_dialect_lmi_object_answer_and_llama3(fake: SageMakerFake) -> None:
    fake.generate_shape = "lmi"
    async with client(fake.spec(dialect="tgi", chat_template="llama3")) as c:
        resp = await c.chat.completions.create(messages=HI)
    assert resp.choices[0].message.content == "Echo: Hello there, fake."
    assert fake.invocations[-1].json["inputs"] == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHello there, fake."
        "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    )


@pytest.mark.parametrize("flavour", ["sse", "jsonlines"])
async def test_tgi_dialect_stream(fake: SageMakerFake, flavour: str) -> None:
    fake.stream_flavour = flavour
    async with client(fake.spec(dialect="tgi")) as c:
        stream = await c.chat.completions.create(messages=HI, stream=True)
        chunks = []
        async with stream:
            async for chunk in stream:
                chunks.append(chunk)
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks)
    assert text == ECHO  # the EOS special token's text is not content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 7
    assert fake.invocations[-1].json["stream"] is True


async def test_tgi_dialect_length_finish(fake: SageMakerFake) -> None:
    fake.script(Streamed(token_events("a", "b", finish="length", eos=None)))
    async with client(fake.spec(dialect="tgi")) as c:
        stream = await c.chat.completions.create(messages=HI, stream=True)
        async with stream:
            chunks = [chunk async for chunk in stream]
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == "ab"
    assert chunks[-1].choices[0].finish_reason == "length"


# ---------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(
    ("answer", "error", "status", "match"),
    [
        (model_error(422, "Input validation error: `temperature` must be strictly positive"),
         BadRequestError, 422, "temperature"),
        (model_error(422, "Input validation error: `inputs` tokens + `max_new_tokens` must be "
                          "<= 4096. Given: 4000 `inputs` tokens and 200 `max_new_tokens`"),
         ContextLengthError, 422, "max_new_tokens"),
        (model_error(500, '{"error":"CUDA out of memory"}'), ServerError, 500, "CUDA"),
        (model_error(429, "Model is overloaded"), RateLimitError, 429, "overloaded"),
        (AwsError(400, "ValidationError", "1 validation error detected: CustomAttributes"),
         BadRequestError, 400, "validation error"),
        (AwsError(429, "ModelNotReadyException", "Model is still loading"),
         RateLimitError, 429, "loading"),
        (AwsError(400, "ThrottlingException", "Rate exceeded"), RateLimitError, 400, "Rate"),
        (AwsError(500, "InternalFailure", "An internal error occurred"), ServerError, 500, ""),
        (AwsError(503, "ServiceUnavailable", "Service unavailable"), ServerError, 503, ""),
        (AwsError(530, "InternalDependencyException", "Dependency failed"), ServerError, 530, ""),
    ],
)  # fmt: skip
async def test_error_mapping(
    fake: SageMakerFake, answer: AwsError, error: type[Exception], status: int, match: str
) -> None:
    fake.script(answer)
    async with client(fake.spec()) as c:
        with pytest.raises(error, match=match or None) as info:
            await c.chat.completions.create(messages=HI)
    exc = info.value
    assert type(exc) is error
    assert exc.status_code == status  # type: ignore[attr-defined]
    assert exc.request_id == REQUEST_ID  # type: ignore[attr-defined]
    assert exc.error_type == answer.code  # type: ignore[attr-defined]
    assert exc.retryable is (status in (429, 500, 503) or answer.code == "ThrottlingException")


async def test_errors_on_the_stream_route_before_the_stream(fake: SageMakerFake) -> None:
    fake.script(model_error(422, "Input validation error: `top_p` must be > 0.0 and < 1.0"))
    async with client(fake.spec()) as c:
        with pytest.raises(BadRequestError, match="top_p"):
            await collect(c)


async def test_unknown_endpoint_is_not_found(fake: SageMakerFake) -> None:
    async with client(fake.spec(endpoint="no-such-endpoint")) as c:
        with pytest.raises(NotFoundError, match="no-such-endpoint") as info:
            await c.chat.completions.create(messages=HI)
    assert info.value.status_code == 400


async def test_retryable_error_is_retried_with_a_fresh_signature(fake: SageMakerFake) -> None:
    fake.script(AwsError(503, "ServiceUnavailable", "try again"))
    async with client(fake.spec(), RetryPolicy.testing(max_retries=1)) as c:
        resp = await c.chat.completions.create(messages=HI)
    assert resp.choices[0].message.content == ECHO
    assert len(fake.invocations) == 2 and fake.auth_failures == []


async def test_wrong_secret_is_an_authentication_error(
    fake: SageMakerFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    async with client(fake.spec()) as c:
        with pytest.raises(AuthenticationError, match="InvalidSignatureException") as info:
            await c.chat.completions.create(messages=HI)
    assert info.value.status_code == 403
    assert "not-the-secret" not in str(info.value)


async def test_missing_credentials_is_a_config_error(
    fake: SageMakerFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    async with client(fake.spec()) as c:
        with pytest.raises(ConfigError, match="no AWS credentials found"):
            await c.chat.completions.create(messages=HI)
    assert fake.requests == []


async def test_missing_region_is_a_config_error(fake: SageMakerFake) -> None:
    async with client(fake.spec(region="", endpoint_url="")) as c:
        with pytest.raises(ConfigError, match="no AWS region"):
            await c.chat.completions.create(messages=HI)
    assert fake.requests == []


@pytest.mark.parametrize(
    ("failure", "error"),
    [
        (StreamFailure("ModelStreamError", "Model stream broke", "StreamBroken"),
         BackendConnectionError),
        (StreamFailure("ModelStreamError", "Model took too long", "ModelInvocationTimeExceeded"),
         BackendTimeoutError),
        (StreamFailure("InternalStreamFailure", "Unknown failure", None),
         BackendConnectionError),
    ],
)  # fmt: skip
async def test_stream_failure_before_content(
    fake: SageMakerFake, failure: StreamFailure, error: type[Exception]
) -> None:
    fake.script(Streamed(b"", failure=failure))
    async with client(fake.spec()) as c:
        with pytest.raises(error, match=failure.type) as info:
            await collect(c)
    assert failure.message in str(info.value)


async def test_stream_failure_after_content(fake: SageMakerFake) -> None:
    output = sse_chat("Partial ", "answer", finish=None, done=False)
    fake.script(Streamed(output, failure=StreamFailure()))
    async with client(fake.spec()) as c:
        stream = await c.chat.completions.create(messages=HI, stream=True)
        seen = []
        with pytest.raises(StreamInterruptedError) as info:
            async with stream:
                async for chunk in stream:
                    seen.append(chunk.choices[0].delta.content or "")
    assert "".join(seen) == "Partial answer"
    assert info.value.partial_text == "Partial answer"


async def test_stream_failure_retried_before_content(fake: SageMakerFake) -> None:
    fake.script(Streamed(b"", failure=StreamFailure("InternalStreamFailure", "retry me", None)))
    async with client(fake.spec(), RetryPolicy.testing(max_retries=1)) as c:
        assert "".join(await collect(c)) == ECHO


async def test_bad_checksum_is_a_protocol_error(fake: SageMakerFake) -> None:
    good = sse_chat("a", finish=None, done=False)
    fake.script(Streamed(good, garbage=b"\x00\x00\x00\x20\x00\x00\x00\x00\xde\xad\xbe\xef" * 3))
    async with client(fake.spec()) as c:
        stream = await c.chat.completions.create(messages=HI, stream=True)
        with pytest.raises(StreamInterruptedError) as info:
            async with stream:
                async for _ in stream:
                    pass
    assert info.value.partial_text == "a"
    assert "checksum mismatch" in str(info.value)


async def test_stream_cut_short_is_a_connection_error(fake: SageMakerFake) -> None:
    fake.script(Streamed(sse_chat(finish=None, done=False), cut=True))
    async with client(fake.spec()) as c:
        with pytest.raises(BackendConnectionError):
            await collect(c)


async def test_error_object_inside_a_200_payload(fake: SageMakerFake) -> None:
    error = b'data:{"error":{"message":"Input validation error","http_status_code":422}}\n\n'
    fake.script(Streamed(error), Invoked({"error": "boom", "error_type": "generation"}))
    async with client(fake.spec()) as c:
        with pytest.raises(BadRequestError, match="Input validation error"):
            await collect(c)
    async with client(fake.spec(dialect="tgi")) as c:
        with pytest.raises(ServerError, match="boom"):
            await c.chat.completions.create(messages=HI)


async def test_bad_frame_before_content_is_a_protocol_error(fake: SageMakerFake) -> None:
    fake.script(Streamed(b"", garbage=b"\x00\x00\x00\x10\x00\x00\x00\x00\x00\x00\x00\x00" * 2))
    async with client(fake.spec()) as c:
        with pytest.raises(ProtocolError, match="prelude checksum mismatch"):
            await collect(c)

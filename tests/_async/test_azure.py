"""Azure OpenAI (``azure://``) through the client, against the OpenAI fake over real sockets.

``azure+http://127.0.0.1:PORT/DEPLOYMENT`` points the codec at the fake, which records the path,
the query and the headers of every request. Azure's shapes (content-filter bodies and
annotation chunks) are scripted.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from llmrouter import (
    AllBackendsFailedError,
    AsyncClient,
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    RateLimitError,
)
from llmrouter.backends import azure
from llmrouter.config import parse_backend
from llmrouter.policy import RetryPolicy
from llmrouter.types import ChatCompletion, ChatCompletionChunk
from tests.fakes.openai_fake import (
    DONE,
    Completion,
    Error,
    OpenAIFake,
    Recorded,
    Stream,
    chunk,
    content_frames,
    finish_frame,
    frame,
    role_frame,
)

KEY = "azure-test-key-0123456789"
MESSAGES = [{"role": "user", "content": "hi"}]
NO_RETRY = RetryPolicy.testing(max_retries=0)
CHAT_PATH = "/openai/deployments/mydeployment/chat/completions?api-version=2024-10-21"
MODELS_PATH = "/openai/models?api-version=2024-10-21"
MODELS = {"object": "list", "data": [{"id": "gpt-4o-2024-08-06", "object": "model"}]}
FILTERED = {"hate": {"filtered": False, "severity": "safe"}}
CONTENT_FILTER_400 = {
    "error": {
        "message": "The response was filtered due to the prompt triggering Azure OpenAI's "
        "content management policy.",
        "type": None,
        "param": "prompt",
        "code": "content_filter",
        "status": 400,
        "innererror": {
            "code": "ResponsibleAIPolicyViolation",
            "content_filter_result": {"violence": {"filtered": True, "severity": "high"}},
        },
    }
}


@pytest.fixture(autouse=True)
def _azure_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", KEY)


@pytest.fixture
def fake() -> Iterator[OpenAIFake]:
    with OpenAIFake() as server:
        yield server


@pytest.fixture
def fake2() -> Iterator[OpenAIFake]:
    with OpenAIFake() as server:
        yield server


def azure_url(fake: OpenAIFake, query: str = "model=gpt-4o") -> str:
    """The fake as an Azure resource serving deployment ``mydeployment``."""
    base = f"azure+http://127.0.0.1:{fake.port}/mydeployment"
    return f"{base}?{query}" if query else base


async def chat(url: str, policy: RetryPolicy = NO_RETRY, **kw: Any) -> ChatCompletion:
    kw.setdefault("messages", MESSAGES)
    async with AsyncClient(url, retry_policy=policy) as client:
        return await client.chat.completions.create(**kw)


async def stream(url: str, **kw: Any) -> list[ChatCompletionChunk]:
    got: list[ChatCompletionChunk] = []
    async with (
        AsyncClient(url, retry_policy=NO_RETRY) as client,
        await client.chat.completions.create(messages=MESSAGES, stream=True, **kw) as response,
    ):
        async for piece in response:
            got.append(piece)
    return got


def posts(fake: OpenAIFake) -> list[Recorded]:
    """The chat requests (``posts(fake)`` matches paths without a query string)."""
    return [r for r in fake.requests if r.method == "POST"]


def assert_azure_auth(headers: dict[str, str]) -> None:
    assert headers["api-key"] == KEY
    assert "authorization" not in headers  # never a Bearer token


# -- requests --------------------------------------------------------------------------------


async def test_chat_uses_the_deployment_path_api_version_and_api_key(fake: OpenAIFake) -> None:
    resp = await chat(azure_url(fake))
    assert resp.choices[0].message.content == "Hello!"
    sent = posts(fake)[0]
    assert sent.path == CHAT_PATH
    assert_azure_auth(sent.headers)
    assert sent.json["model"] == "mydeployment"
    assert KEY not in resp.route.backend


async def test_api_version_option_and_a_call_model_are_honoured_as_azure_does(
    fake: OpenAIFake,
) -> None:
    await chat(azure_url(fake, "api_version=2024-06-01"), model="gpt-4o-mini")
    sent = posts(fake)[0]
    assert sent.path == CHAT_PATH.replace("2024-10-21", "2024-06-01")
    assert sent.json["model"] == "mydeployment"  # the deployment is the model on Azure


async def test_stream_with_content_filter_annotations(fake: OpenAIFake) -> None:
    prompt_filter = {
        "choices": [],
        "created": 0,
        "id": "",
        "model": "",
        "object": "",
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": FILTERED}],
    }
    annotation = {
        **chunk(),
        "choices": [{"index": 0, "finish_reason": None, "content_filter_results": FILTERED}],
    }
    frames = [
        frame(prompt_filter),
        role_frame(),
        *content_frames("Hel", "lo"),
        frame(annotation),
        finish_frame(),
        DONE,
    ]
    fake.script(Stream(frames))
    chunks = await stream(azure_url(fake))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello"
    assert chunks[0].choices == []
    assert chunks[0].model_dump()["prompt_filter_results"][0]["prompt_index"] == 0
    assert chunks[-1].choices[0].finish_reason == "stop"
    sent = posts(fake)[0]
    assert sent.path == CHAT_PATH and sent.json["stream"] is True
    assert_azure_auth(sent.headers)


async def test_content_filter_finish_reason_passes_through(fake: OpenAIFake) -> None:
    fake.script(Completion(content=None, finish_reason="content_filter"))
    resp = await chat(azure_url(fake))
    assert resp.choices[0].finish_reason == "content_filter"
    assert resp.choices[0].message.content is None


async def test_a_filtered_prompt_is_a_bad_request_that_does_not_fail_over(
    fake: OpenAIFake, fake2: OpenAIFake
) -> None:
    fake.script(Error(400, CONTENT_FILTER_400))
    with pytest.raises(BadRequestError) as info:
        await chat(f"{azure_url(fake)}, {fake2.url}?model=m")
    error = info.value
    assert error.error_type == "content_filter"
    assert error.status_code == 400
    assert "content management policy" in str(error)
    assert KEY not in str(error) and KEY not in repr(error)
    assert posts(fake2) == []


async def test_errors_never_show_the_key(fake: OpenAIFake, fake2: OpenAIFake) -> None:
    denied = {"error": {"code": "401", "message": "Access denied due to invalid subscription key"}}
    fake.script(Error(401, denied))
    with pytest.raises(AuthenticationError) as info:
        await chat(azure_url(fake))
    assert KEY not in str(info.value)
    fake.script(Error(404, {"error": {"code": "DeploymentNotFound", "message": "no such"}}))
    fake2.script(Error(500, {"error": {"message": "boom"}}))
    with pytest.raises(AllBackendsFailedError) as all_info:
        await chat(f"{azure_url(fake)}, {fake2.url}?model=m")
    assert isinstance(all_info.value.errors[0], NotFoundError)
    assert KEY not in str(all_info.value) and KEY not in repr(all_info.value)


async def test_rate_limits_are_retried_with_the_key(fake: OpenAIFake) -> None:
    headers = {"retry-after-ms": "10", "apim-request-id": "req-1"}
    fake.script(Error(429, {"error": {"code": "429", "message": "Rate limit"}}, headers))
    policy = RetryPolicy(max_retries=1, initial_backoff=0, max_backoff=0, retry_after_cap=1)
    resp = await chat(azure_url(fake), policy=policy)
    error = resp.route.attempts[0].error
    assert isinstance(error, RateLimitError)
    assert error.retry_after == pytest.approx(0.01)
    assert error.request_id == "req-1"
    assert len(posts(fake)) == 2
    for sent in posts(fake):
        assert_azure_auth(sent.headers)


# -- discovery and health --------------------------------------------------------------------


async def test_discovery_checks_the_resource_and_reports_the_deployment(
    fake: OpenAIFake,
) -> None:
    fake.script(Error(200, MODELS), Completion(), Error(200, MODELS))
    async with AsyncClient(azure_url(fake, ""), retry_policy=NO_RETRY) as client:
        await client.chat.completions.create(messages=MESSAGES)
        models = await client.models.list()
    assert [r.path for r in fake.requests] == [MODELS_PATH, CHAT_PATH, MODELS_PATH]
    for sent in fake.requests:
        assert_azure_auth(sent.headers)
    assert posts(fake)[0].json["model"] == "mydeployment"
    assert [m.id for m in models.data] == ["mydeployment"]


async def test_health_probe_lists_models(fake: OpenAIFake) -> None:
    fake.script(Error(200, MODELS), Error(401, {"error": {"code": "401", "message": "denied"}}))
    async with AsyncClient(azure_url(fake), retry_policy=NO_RETRY) as client:
        member = client._router.members[0]
        assert await client._router.probe(member) is True
        assert await client._router.probe(member) is False
    assert [r.path for r in fake.requests] == [MODELS_PATH, MODELS_PATH]


def test_codec_urls_for_a_real_resource() -> None:
    spec = parse_backend(
        "azure://acme.openai.azure.com/gpt4o-prod?api_version=2025-01-01-preview",
        {"AZURE_OPENAI_API_KEY": KEY},
    )
    assert azure.build_models(spec).url == (
        "https://acme.openai.azure.com/openai/models?api-version=2025-01-01-preview"
    )
    assert azure.build_health(spec).headers["api-key"] == KEY
    assert azure.CAPABILITIES.n and azure.CAPABILITIES.json_schema

"""The openai SDK's constructor and client methods: ``base_url``, ``api_key``, ``organization``,
``project``, ``timeout``, ``max_retries``, ``default_headers``, ``default_query``, ``close()``,
``with_options``, ``models.retrieve``, ``with_raw_response`` and ``with_streaming_response``,
over real HTTP to the loopback OpenAI fake (``tests/fakes/openai_fake.py``)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from llmrouter import (
    APIConnectionError,
    APIStatusError,
    AsyncClient,
    AsyncStream,
    AuthenticationError,
    BackendConnectionError,
    ConfigError,
    InvalidRequestError,
    NotFoundError,
)
from llmrouter.events import Event
from tests.fakes.openai_fake import Completion, Error, OpenAIFake, Stall, sse
from tests.fakes.openai_fake import Stream as SSE

KEY = "sk-proj-CODEKEY-0123456789abcdefghij"
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def fake() -> Iterator[OpenAIFake]:
    with OpenAIFake(models=["m1", "m2"]) as server:
        yield server


@pytest.fixture(autouse=True)
def _no_openai_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (
        "LLMROUTER_URL",
        "OPENAI_BASE_URL",
        "OPENAI_API_KEY",
        "OPENAI_ORG_ID",
        "OPENAI_PROJECT_ID",
    ):
        monkeypatch.delenv(var, raising=False)


async def test_base_url_and_api_key_as_in_the_openai_sdk(fake: OpenAIFake) -> None:
    client = AsyncClient(base_url=fake.url, api_key=KEY, organization="org-1", project="proj-1")
    resp = await client.chat.completions.create(model="m1", messages=HI)
    assert resp.choices[0].message.content == "Hello!"
    sent = fake.chat_requests[-1].headers
    assert sent["authorization"] == f"Bearer {KEY}"
    assert sent["openai-organization"] == "org-1"
    assert sent["openai-project"] == "proj-1"
    await client.close()


async def test_arguments_fall_back_to_the_sdk_variables(
    fake: OpenAIFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_ORG_ID", "org-env")
    client = AsyncClient(base_url=fake.url)
    await client.chat.completions.create(model="m1", messages=HI)
    assert fake.chat_requests[-1].headers["authorization"] == f"Bearer {KEY}"
    assert fake.chat_requests[-1].headers["openai-organization"] == "org-env"
    await client.close()
    monkeypatch.setenv("OPENAI_BASE_URL", fake.url)
    # The argument wins over the variable, as in the SDK.
    client = AsyncClient(api_key="sk-other-key-000000")
    await client.chat.completions.create(model="m1", messages=HI)
    assert fake.chat_requests[-1].headers["authorization"] == "Bearer sk-other-key-000000"
    await client.close()


async def test_a_key_given_in_code_with_no_url_means_openai() -> None:
    client = AsyncClient(api_key=KEY)
    assert client.backends[0].base_url == "https://api.openai.com/v1"
    assert KEY not in repr(client) and KEY not in repr(client.backends)
    await client.close()


async def test_base_url_needs_a_key_as_in_the_sdk(fake: OpenAIFake) -> None:
    with pytest.raises(ConfigError, match="api_key client option must be set"):
        AsyncClient(base_url=fake.url)


async def test_base_url_with_a_chain_explains_the_choice(fake: OpenAIFake) -> None:
    with pytest.raises(ConfigError, match="base_url= names one OpenAI-compatible server"):
        AsyncClient(fake.url, base_url=fake.url, api_key=KEY)
    with pytest.raises(ConfigError, match="apply to one backend"):
        AsyncClient(f"{fake.url}, {fake.url}", api_key=KEY)


async def test_api_key_applies_to_the_one_backend_of_a_url(fake: OpenAIFake) -> None:
    client = AsyncClient(fake.url, api_key=KEY)
    await client.chat.completions.create(model="m1", messages=HI)
    assert fake.chat_requests[-1].headers["authorization"] == f"Bearer {KEY}"
    await client.close()


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("sk-abc\r\n", None),
        ("  sk-abc  ", None),
        ("sk-\x00abc", "control characters"),
        ("sk-ключ", "non-ASCII"),
    ],
)
async def test_a_key_in_code_is_checked_at_load(
    fake: OpenAIFake, key: str, why: str | None
) -> None:
    if why is None:  # stripped, as an environment key is
        client = AsyncClient(base_url=fake.url, api_key=key)
        await client.chat.completions.create(model="m1", messages=HI)
        assert fake.chat_requests[-1].headers["authorization"] == "Bearer sk-abc"
        await client.close()
        return
    with pytest.raises(ConfigError, match=why) as info:
        AsyncClient(base_url=fake.url, api_key=key)
    assert "api_key" in str(info.value) and key.strip() not in str(info.value)


async def test_a_key_in_code_is_never_shown(
    fake: OpenAIFake, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    events: list[Event] = []
    fake.script(Error(401, {"error": {"message": f"Incorrect API key provided: {KEY}"}}))
    client = AsyncClient(base_url=fake.url, api_key=KEY, on_event=events.append, max_retries=0)
    with pytest.raises(AuthenticationError) as info:
        await client.chat.completions.create(model="m1", messages=HI)
    shown = [
        repr(client),
        repr(client.backends),
        str(info.value),
        repr(info.value),
        repr(info.value.body),
        caplog.text,
        *map(repr, events),
    ]
    for text in shown:
        assert KEY not in text and KEY[:12] not in text
    await client.close()


async def test_timeout_as_seconds_is_the_calls_deadline(fake: OpenAIFake) -> None:
    fake.script(Stall())
    client = AsyncClient(base_url=fake.url, api_key=KEY, timeout=0.5, max_retries=0)
    with pytest.raises(APIConnectionError):  # APITimeoutError is a subclass, as in the SDK
        await client.chat.completions.create(model="m1", messages=HI)
    await client.close()


async def test_timeout_as_an_httpx_timeout_limits_each_attempt(fake: OpenAIFake) -> None:
    # Anything with httpx.Timeout's attributes: httpx's own, httpx2's.
    limits = SimpleNamespace(connect=2.0, read=0.3, write=10.0, pool=None)
    fake.script(Stall())
    client = AsyncClient(base_url=fake.url, api_key=KEY, timeout=limits, max_retries=0)
    with pytest.raises(APIConnectionError, match="timeout"):
        await client.chat.completions.create(model="m1", messages=HI)
    await client.close()
    with pytest.raises(ConfigError, match="timeout"):
        AsyncClient(base_url=fake.url, api_key=KEY, timeout=-1)
    with pytest.raises(ConfigError, match="timeout"):
        AsyncClient(base_url=fake.url, api_key=KEY, timeout="soon")


async def test_max_retries_and_with_options(fake: OpenAIFake) -> None:
    client = AsyncClient(base_url=fake.url, api_key=KEY, max_retries=0)
    fake.script(Error(503, {"error": {"message": "busy"}}))
    with pytest.raises(APIStatusError) as info:
        await client.chat.completions.create(model="m1", messages=HI)
    assert info.value.status_code == 503
    assert len(fake.chat_requests) == 1
    # A copy with retries: it shares the backends (the same fake connection pool).
    fake.script(Error(503, {"error": {"message": "busy"}}))
    retrying = client.with_options(max_retries=2)
    resp = await retrying.chat.completions.create(model="m1", messages=HI)
    assert resp.choices[0].message.content == "Hello!"
    assert len(fake.chat_requests) == 3
    assert retrying._router is client._router
    with pytest.raises(TypeError, match="unexpected keyword"):
        client.with_options(retries=3)
    await client.close()


async def test_default_headers_and_query(fake: OpenAIFake) -> None:
    client = AsyncClient(
        base_url=fake.url,
        api_key=KEY,
        default_headers={"X-Team": "search"},
        default_query={"api-version": "2024-10-21", "debug": True},
    )
    await client.chat.completions.create(
        model="m1", messages=HI, extra_headers={"X-Call": "1"}, extra_query={"trace": 1}
    )
    sent = fake.requests[-1]
    assert sent.headers["x-team"] == "search" and sent.headers["x-call"] == "1"
    assert sent.path.endswith("/chat/completions?api-version=2024-10-21&debug=true&trace=1")
    copy = client.with_options(default_headers={"X-Other": "2"})
    await copy.chat.completions.create(model="m1", messages=HI)
    sent = fake.requests[-1]
    assert sent.headers["x-team"] == "search" and sent.headers["x-other"] == "2"
    with pytest.raises(ConfigError, match="default_headers"):
        AsyncClient(base_url=fake.url, api_key=KEY, default_headers={"X-Key": "a\r\nb"})
    with pytest.raises(InvalidRequestError, match="extra_query"):
        await client.chat.completions.create(model="m1", messages=HI, extra_query={"a": [1]})
    await client.close()


async def test_a_closed_client_fails_as_in_the_sdk(fake: OpenAIFake) -> None:
    client = AsyncClient(base_url=fake.url, api_key=KEY)
    await client.chat.completions.create(model="m1", messages=HI)
    assert not client.is_closed()
    await client.close()
    assert client.is_closed()
    before = len(fake.requests)
    with pytest.raises(APIConnectionError, match="closed"):
        await client.chat.completions.create(model="m1", messages=HI)
    with pytest.raises(BackendConnectionError, match="closed"):
        await client.models.list()
    assert len(fake.requests) == before
    async with AsyncClient(base_url=fake.url, api_key=KEY) as scoped:
        await scoped.chat.completions.create(model="m1", messages=HI)
    assert scoped.is_closed()


async def test_models_list_and_retrieve(fake: OpenAIFake) -> None:
    client = AsyncClient(base_url=fake.url, api_key=KEY)
    assert [m.id for m in (await client.models.list()).data] == ["m1", "m2"]
    assert (await client.models.retrieve("m2")).id == "m2"
    with pytest.raises(NotFoundError, match="'nope' does not exist") as info:
        await client.models.retrieve("nope")
    assert info.value.status_code == 404
    await client.close()


async def test_with_raw_response_shows_the_serving_exchange(fake: OpenAIFake) -> None:
    client = AsyncClient(base_url=fake.url, api_key=KEY)
    fake.script(Completion(headers={"X-My-Header": "yes", "x-request-id": "req_123"}))
    raw = await client.chat.completions.with_raw_response.create(model="m1", messages=HI)
    assert raw.status_code == 200
    assert raw.headers.get("x-my-header") == "yes" and raw.headers["X-My-Header"] == "yes"
    assert raw.request_id == "req_123"
    assert raw.json()["choices"][0]["message"]["content"] == "Hello!"
    completion = raw.parse()
    assert completion.choices[0].message.content == "Hello!"
    assert raw.retries_taken == 0
    # A stream: the headers of the attempt that serves it; parse() is the stream.
    fake.script(SSE(sse("Hel", "lo"), headers={"X-My-Header": "streamed"}))
    raw = await client.chat.completions.with_raw_response.create(
        model="m1", messages=HI, stream=True
    )
    assert raw.headers["x-my-header"] == "streamed"
    stream = raw.parse()
    assert isinstance(stream, AsyncStream)
    assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices]) == (
        "Hello"
    )
    with pytest.raises(TypeError, match="not kept"):
        _ = raw.content
    await client.close()


async def test_with_streaming_response_iterates_lines(fake: OpenAIFake) -> None:
    client = AsyncClient(base_url=fake.url, api_key=KEY)
    fake.script(Completion(headers={"X-My-Header": "plain"}))
    async with client.chat.completions.with_streaming_response.create(
        model="m1", messages=HI
    ) as response:
        assert response.headers.get("X-My-Header") == "plain"
        lines = [line async for line in response.iter_lines()]
        assert '"Hello!"' in "".join(lines)
        assert (await response.json())["object"] == "chat.completion"
    fake.script(SSE(sse("Hel", "lo")))
    async with client.chat.completions.with_streaming_response.create(
        model="m1", messages=HI, stream=True
    ) as response:
        lines = [line async for line in response.iter_lines()]
    data = [line for line in lines if line.startswith("data: ")]
    assert data[-1] == "data: [DONE]" and any('"Hel"' in line for line in data)
    await client.close()


async def test_to_dict_and_to_json_as_in_the_sdk(fake: OpenAIFake) -> None:
    client = AsyncClient(base_url=fake.url, api_key=KEY)
    resp = await client.chat.completions.create(model="m1", messages=HI)
    as_dict = resp.to_dict()
    assert as_dict["choices"][0]["message"]["content"] == "Hello!"
    assert "route" not in as_dict and "_route" not in as_dict
    assert resp.to_json().startswith('{\n  "id"')
    assert '"Hello!"' in resp.model_dump_json()
    await client.close()

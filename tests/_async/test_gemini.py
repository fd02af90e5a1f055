"""The Gemini API (``gemini://``) and Vertex AI (``vertex://``) end to end against the loopback
fake (``tests/fakes/gemini_fake.py``; what was relied on: ``docs/backends/gemini.md``): the key
header, safety, thinking tokens, parallel calls, structured output, the error statuses, and
Vertex AI's Application Default Credentials through google-auth with a service-account file
whose token endpoint is a loopback server.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from llmrouter import (
    AsyncClient,
    AuthenticationError,
    BadRequestError,
    InvalidRequestError,
    RateLimitError,
)
from llmrouter.backends import vertex_auth
from llmrouter.policy import RetryPolicy
from tests.fakes.gemini_fake import API_KEY, TOKEN, GeminiFake, GoogleError, Reply
from tests.fakes.openai_fake import Error, OpenAIFake

NO_RETRY = RetryPolicy.testing(max_retries=0)
HI = [{"role": "user", "content": "Hello there, fake."}]


@pytest.fixture(autouse=True)
def keys(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", API_KEY)
    monkeypatch.setenv("VERTEX_TEST_TOKEN", TOKEN)
    vertex_auth.reset_credentials()
    yield
    vertex_auth.reset_credentials()


@pytest.fixture
def fake() -> Iterator[GeminiFake]:
    with GeminiFake() as server:
        yield server


async def ask(url: str, **kw: Any) -> Any:
    kw.setdefault("messages", HI)
    async with AsyncClient(url, retry_policy=NO_RETRY) as c:
        return await c.chat.completions.create(**kw)


async def collect(url: str, **kw: Any) -> list[Any]:
    kw.setdefault("messages", HI)
    async with AsyncClient(url, retry_policy=NO_RETRY) as c:
        stream = await c.chat.completions.create(stream=True, **kw)
        async with stream:
            return [chunk async for chunk in stream]


async def test_key_travels_in_the_header_only(
    fake: GeminiFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    resp = await ask(fake.url())
    assert resp.choices[0].message.content == "Echo: Hello there, fake."
    sent = fake.generate_requests[-1]
    assert sent.headers["x-goog-api-key"] == API_KEY and API_KEY not in sent.path
    monkeypatch.delenv("GEMINI_API_KEY")
    monkeypatch.setenv("GOOGLE_API_KEY", API_KEY)  # the fallback variable
    await collect(fake.url())
    assert fake.generate_requests[-1].path.endswith(":streamGenerateContent?alt=sse")


async def test_wrong_key_is_an_authentication_error(
    fake: GeminiFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "AIza-wrong")
    with pytest.raises(AuthenticationError) as info:
        await ask(fake.url())
    assert info.value.status_code == 400 and "AIza-wrong" not in str(info.value)


async def test_the_fake_refuses_a_key_in_the_query(fake: GeminiFake) -> None:
    # What a client that leaked the key into the URL would meet (never llmrouter: see above).
    fake.script()  # nothing scripted: the query check comes first
    import httpx2

    url = (
        f"http://127.0.0.1:{fake.port}/v1beta/models/gemini-2.5-flash:generateContent?key={API_KEY}"
    )
    answer = httpx2.post(url, json={"contents": [{"role": "user", "parts": [{"text": "x"}]}]})
    assert answer.status_code == 400


async def test_safety_finish_keeps_the_ratings(fake: GeminiFake) -> None:
    ratings = [
        {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True}
    ]
    fake.script(
        Reply(parts=[], finish="SAFETY", safety=ratings),
        Reply(parts=[], finish="SAFETY", safety=ratings),
    )
    resp = await ask(fake.url())
    assert resp.choices[0].finish_reason == "content_filter"
    assert resp.choices[0].model_extra["safety_ratings"] == ratings
    chunks = await collect(fake.url())
    assert chunks[-1].choices[0].finish_reason == "content_filter"


@pytest.mark.parametrize("streamed", [False, True])
async def test_blocked_prompt_is_a_typed_error(fake: GeminiFake, streamed: bool) -> None:
    fake.script(Reply(prompt_feedback={"blockReason": "SAFETY", "safetyRatings": []}))
    with pytest.raises(BadRequestError) as info:
        await (collect(fake.url()) if streamed else ask(fake.url()))
    assert info.value.error_type == "prompt_blocked"


async def test_thinking_tokens_count_as_completion(fake: GeminiFake) -> None:
    usage = {
        "promptTokenCount": 5,
        "candidatesTokenCount": 2,
        "thoughtsTokenCount": 7,
        "totalTokenCount": 14,
    }
    fake.script(Reply(parts=[{"text": "hmm", "thought": True}, {"text": "ok"}], usage=usage))
    resp = await ask(fake.url())
    assert resp.choices[0].message.content == "ok"
    assert resp.usage.completion_tokens == 9 and resp.usage.total_tokens == 14


async def test_parallel_function_calls_round_trip(fake: GeminiFake) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "w",
                "parameters": {"type": "object", "properties": {"c": {"type": "string"}}},
            },
        }
    ]
    calls = [{"functionCall": {"name": "w", "args": {"c": c}}} for c in ("Paris", "Rome")]
    fake.script(Reply(parts=calls))
    resp = await ask(fake.url(), tools=tools)
    message = resp.choices[0].message
    assert resp.choices[0].finish_reason == "tool_calls" and len(message.tool_calls) == 2
    follow = [*HI, message.model_dump(exclude_none=True)] + [
        {"role": "tool", "tool_call_id": c.id, "content": f"{i}C"}
        for i, c in enumerate(message.tool_calls)
    ]
    again = await ask(fake.url(), messages=follow, tools=tools)
    assert again.choices[0].message.content == "Tool said: 1C"
    sent = fake.generate_requests[-1].json["contents"]
    assert [p["functionResponse"]["name"] for p in sent[-1]["parts"]] == ["w", "w"]


async def test_structured_output_and_refusal(fake: GeminiFake) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    resp = await ask(fake.url(), response_format=fmt)
    assert json.loads(resp.choices[0].message.content) == {"n": 1}
    bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"oneOf": [schema]}}}
    with pytest.raises(InvalidRequestError):
        await ask(fake.url(), response_format=bad)
    assert len(fake.generate_requests) == 1


@pytest.mark.parametrize("streamed", [False, True])
async def test_resource_exhausted_honours_retry_info(fake: GeminiFake, streamed: bool) -> None:
    fake.script(GoogleError(429, "RESOURCE_EXHAUSTED", "Quota exceeded", retry_delay="2.5s"))
    with pytest.raises(RateLimitError) as info:
        await (collect(fake.url()) if streamed else ask(fake.url()))
    assert info.value.retry_after == 2.5 and info.value.retryable


async def test_vertex_with_application_default_credentials(
    fake: GeminiFake, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """google-auth's real ADC path: a service-account file whose token_uri is a loopback
    token endpoint; the token is minted (a signed JWT grant) off the event loop."""
    pytest.importorskip("google.auth", reason="the vertex extra (google-auth) is not installed")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    with OpenAIFake() as token_server:
        token_server.script(
            Error(200, {"access_token": TOKEN, "expires_in": 3600, "token_type": "Bearer"})
        )
        info = {
            "type": "service_account", "project_id": "my-project-123", "private_key_id": "k1",
            "private_key": pem, "client_email": "llmrouter@my-project-123.iam.gserviceaccount.com",
            "client_id": "1", "token_uri": f"http://127.0.0.1:{token_server.port}/token",
        }  # fmt: skip
        path = tmp_path / "sa.json"
        path.write_text(json.dumps(info))
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))
        url = fake.vertex_url().replace("&token_env=VERTEX_TEST_TOKEN", "")
        resp = await ask(url)
        await collect(url)
        assert resp.choices[0].message.content
        grants = [r for r in token_server.requests if r.path == "/token"]
        assert len(grants) == 1  # minted once, then reused while valid
        assert b"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer" in grants[0].body
    assert fake.generate_requests[-1].headers["authorization"] == f"Bearer {TOKEN}"

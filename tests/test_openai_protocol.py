"""Protocol corner cases of the OpenAI-compatible backend, through the public client API.

Two ways in: ``httpx2.MockTransport`` plugged into the transport seam (byte-exact control of
what the client reads), and the loopback fake in ``tests/fakes/openai_fake.py`` with the default
transports (httpx2 for ``Client``, aiohttp for ``AsyncClient``) so real sockets are exercised.
Most cases run for both twins through the ``mode`` fixture. Protocol facts:
``shared/protocols/openai-chat.md``.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime, timezone
from email.utils import format_datetime
from typing import Any

import httpx2
import pytest

import llmrouter
from llmrouter._http import HttpxAsyncTransport, SyncHTTPTransport
from llmrouter.policy import RetryPolicy
from tests.fakes.openai_fake import (
    DONE,
    USAGE,
    Close,
    Completion,
    Error,
    OpenAIFake,
    Stall,
    Stream,
    comment,
    content_frames,
    error_frame,
    finish_frame,
    frame,
    role_frame,
    sse,
    usage_frame,
)

MESSAGES = [{"role": "user", "content": "hi"}]


# No retries on the same backend: each scripted response is exactly what one attempt sees.
OPTIONS: dict[str, Any] = {"retry_policy": RetryPolicy.testing(max_retries=0)}


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def fake() -> Iterator[OpenAIFake]:
    with OpenAIFake() as server:
        yield server


@pytest.fixture
def fake2() -> Iterator[OpenAIFake]:
    with OpenAIFake() as server:
        yield server


async def create(mode: str, url: str, *, times: int = 1, **kw: Any) -> Any:
    """``times`` non-streamed chats on one client with the default transport; the last answer."""
    kw.setdefault("messages", MESSAGES)
    if mode == "sync":
        with llmrouter.Client(url, **OPTIONS) as client:
            for _ in range(times):
                resp = client.chat.completions.create(**kw)
            return resp
    async with llmrouter.AsyncClient(url, **OPTIONS) as client:
        for _ in range(times):
            resp = await client.chat.completions.create(**kw)
        return resp


async def stream(
    mode: str, url: str, into: list[Any], *, limit: int | None = None, times: int = 1, **kw: Any
) -> Any:
    """Stream ``times`` chats on one client, appending every chunk to ``into`` (kept when it
    raises); stop each after ``limit`` chunks. Returns the last stream (for ``.route``)."""
    kw.setdefault("messages", MESSAGES)
    if mode == "sync":
        with llmrouter.Client(url, **OPTIONS) as client:
            for _ in range(times):
                with client.chat.completions.create(stream=True, **kw) as s:
                    for chunk in s:
                        into.append(chunk)
                        if limit is not None and len(into) >= limit:
                            break
            return s
    async with llmrouter.AsyncClient(url, **OPTIONS) as client:
        for _ in range(times):
            async with await client.chat.completions.create(stream=True, **kw) as s:
                async for chunk in s:
                    into.append(chunk)
                    if limit is not None and len(into) >= limit:
                        break
        return s


async def call(mode: str, url: str, streamed: bool, **kw: Any) -> Any:
    """One chat, streamed (chunks dropped) or not."""
    return await (stream(mode, url, [], **kw) if streamed else create(mode, url, **kw))


def text_of(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


# ---------------------------------------------------------------------------------------------
# Non-streamed round trip and the request we send


async def test_round_trip_dump_equals_the_json_sent(mode: str, fake: OpenAIFake) -> None:
    sent = Completion(
        content="Bonjour.",
        usage={**USAGE, "prompt_tokens_details": {"cached_tokens": 4}},
        extra={"system_fingerprint": "b1-abc", "timings": {"prompt_n": 12, "predicted_ms": 9.5}},
    )
    fake.script(sent)
    resp = await create(mode, fake.url)
    assert resp.model_dump(exclude_unset=True) == sent.payload()
    assert resp.timings == {"prompt_n": 12, "predicted_ms": 9.5}
    assert resp.route.backend == fake.url
    assert [(a.backend, a.error) for a in resp.route.attempts] == [(fake.url, None)]


async def test_tool_call_and_chunked_json_round_trip(mode: str, fake: OpenAIFake) -> None:
    function = {"name": "get_weather", "arguments": '{"city":"Paris"}'}
    tool_call = {"id": "call_1", "type": "function", "function": function}
    sent = Completion(
        content=None, tool_calls=[tool_call], finish_reason="tool_calls", chunked=True
    )
    fake.script(sent)
    resp = await create(mode, fake.url)
    assert resp.choices[0].message.tool_calls[0].function.arguments == '{"city":"Paris"}'
    assert resp.model_dump(exclude_unset=True) == sent.payload()


def test_round_trip_over_mock_transport() -> None:
    sent = Completion(extra={"timings": {"cache_n": 0}}).payload()
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(200, json=sent)

    transport = SyncHTTPTransport(transport=httpx2.MockTransport(handler))
    with llmrouter.Client("http://mock.test/v1?model=m", transport=transport, **OPTIONS) as client:
        resp = client.chat.completions.create(messages=MESSAGES, max_tokens=3)
    assert resp.model_dump(exclude_unset=True) == sent
    assert str(seen[0].url) == "http://mock.test/v1/chat/completions"
    assert json.loads(seen[0].content) == {"model": "m", "messages": MESSAGES, "max_tokens": 3}


async def test_body_holds_only_what_the_caller_set(mode: str, fake: OpenAIFake) -> None:
    extra = {"extra_body": {"top_k": 3, "min_p": 0.1}, "extra_headers": {"X-Trace-Id": "t-1"}}
    await create(mode, fake.url, model="m", temperature=0.2, max_tokens=5, top_p=None, **extra)
    request = fake.chat_requests[0]
    assert request.json == {
        "model": "m",
        "messages": MESSAGES,
        "temperature": 0.2,
        "max_tokens": 5,
        "top_k": 3,
        "min_p": 0.1,
    }
    assert request.headers["x-trace-id"] == "t-1"
    assert request.headers["content-type"] == "application/json"
    assert "authorization" not in request.headers


async def test_streamed_body_adds_stream_true(mode: str, fake: OpenAIFake) -> None:
    await stream(mode, fake.url, [], model="m", stream_options={"include_usage": True})
    assert fake.chat_requests[0].json == {
        "model": "m",
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def test_bearer_key_from_api_key_env_and_never_in_errors(
    mode: str, fake: OpenAIFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_LLM_KEY", "sk-secret-123")
    url = fake.url + "?api_key_env=FAKE_LLM_KEY"
    await create(mode, url)  # no model: discovery sends the key too
    assert [r.headers.get("authorization") for r in fake.requests] == ["Bearer sk-secret-123"] * 2
    fake.script(Error(401, {"error": "Unauthorized"}))
    with pytest.raises(llmrouter.AuthenticationError) as info:
        await create(mode, url, model="m")
    assert "sk-secret" not in str(info.value) + repr(info.value)


# ---------------------------------------------------------------------------------------------
# Model discovery


async def test_model_is_discovered_once_and_cached(mode: str, fake: OpenAIFake) -> None:
    fake.models = ["the-only-model"]
    await create(mode, fake.url, times=3)
    assert [r.json["model"] for r in fake.chat_requests] == ["the-only-model"] * 3
    assert [r.method for r in fake.requests if r.path == "/v1/models"] == ["GET"]


async def test_a_multi_model_server_needs_a_model(mode: str, fake: OpenAIFake) -> None:
    fake.models = ["llama-8b", "qwen-7b"]
    with pytest.raises(llmrouter.InvalidRequestError, match="llama-8b, qwen-7b") as info:
        await create(mode, fake.url)
    assert info.value.param == "model"
    assert fake.chat_requests == []


@pytest.mark.parametrize("how", ["pin", "argument"])
async def test_a_known_model_skips_discovery(mode: str, fake: OpenAIFake, how: str) -> None:
    fake.models = ["a", "b"]
    if how == "pin":
        await create(mode, fake.url + "?model=pinned")
    else:
        await create(mode, fake.url, model="pinned")
    assert [r.path for r in fake.requests] == ["/v1/chat/completions"]
    assert fake.chat_requests[0].json["model"] == "pinned"


# ---------------------------------------------------------------------------------------------
# Errors, end to end

HTML_502 = b"<html><head><title>502 Bad Gateway</title></head><body><h1>502</h1></body></html>"
PYDANTIC_500 = {
    "error": {
        "type": "internal_server_error",
        "message": "[{'type': 'missing', 'loc': ('body', 'messages'), 'msg': 'Field required'}]",
    }
}

ERROR_CASES = [
    (
        Error(400, {"error": {"message": "bad temperature", "type": "invalid_request_error"}}),
        llmrouter.BadRequestError,
    ),
    (
        Error(
            400,
            {
                "error": {
                    "message": "This model's maximum context length is 2048 tokens",
                    "type": "BadRequestError",
                    "code": 400,
                }
            },
        ),
        llmrouter.ContextLengthError,
    ),
    (Error(401, {"error": "Unauthorized"}), llmrouter.AuthenticationError),
    (
        Error(
            404, {"error": {"message": "The model `x` does not exist.", "type": "NotFoundError"}}
        ),
        llmrouter.NotFoundError,
    ),
    (
        Error(429, {"error": {"message": "slow down"}}, {"Retry-After": "7"}),
        llmrouter.RateLimitError,
    ),
    (
        Error(429, {"error": {"message": "slow down"}}, {"retry-after-ms": "1500"}),
        llmrouter.RateLimitError,
    ),
    (Error(500, {"error": {"message": "engine dead"}}), llmrouter.ServerError),
    (
        Error(503, {"error": {"message": "queue full", "type": "QueueOverflowError"}}),
        llmrouter.ServerError,
    ),
    (Error(502, HTML_502, content_type="text/html"), llmrouter.ServerError),
    (
        Error(
            422,
            {
                "error": "Input validation error: `temperature` must be strictly positive",
                "error_type": "validation",
            },
        ),
        llmrouter.BadRequestError,
    ),
    (Error(500, PYDANTIC_500), llmrouter.BadRequestError),
]
ERROR_IDS = [
    "400",
    "400_context",
    "401_vllm",
    "404",
    "429_seconds",
    "429_ms",
    "500",
    "503",
    "502_html",
    "422_tgi",
    "500_pydantic_body",
]


@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize(("response", "cls"), ERROR_CASES, ids=ERROR_IDS)
async def test_error_status_maps_to_the_error_tree(
    mode: str, fake: OpenAIFake, response: Error, cls: type[Exception], streamed: bool
) -> None:
    fake.script(response)
    with pytest.raises(llmrouter.StatusError) as info:
        await call(mode, fake.url, streamed, model="m")
    error = info.value
    assert type(error) is cls
    assert error.backend == fake.url
    assert error.status_code == response.status
    expected_body = response.body.decode() if isinstance(response.body, bytes) else response.body
    assert error.body == expected_body
    if response.status == 429:
        assert error.retry_after == (7.0 if "Retry-After" in response.headers else 1.5)
        assert error.retryable
    if response.status == 502:
        assert "<" not in error.message
        assert len(str(error)) < 120


async def test_retry_after_http_date(mode: str, fake: OpenAIFake) -> None:
    when = format_datetime(datetime.fromtimestamp(time.time() + 30, tz=timezone.utc), usegmt=True)
    fake.script(Error(429, b"{}", {"Retry-After": when}))
    with pytest.raises(llmrouter.RateLimitError) as info:
        await create(mode, fake.url, model="m")
    assert 25.0 <= info.value.retry_after <= 31.0


async def test_request_id_and_x_should_retry(mode: str, fake: OpenAIFake) -> None:
    fake.script(Error(500, b"{}", {"x-request-id": "req_42", "x-should-retry": "false"}))
    with pytest.raises(llmrouter.ServerError) as info:
        await create(mode, fake.url, model="m")
    assert info.value.request_id == "req_42"
    assert info.value.retryable is False


@pytest.mark.parametrize(
    ("response", "cls"),
    [
        (Error(200, {"error": {"message": "boom", "code": 503}}), llmrouter.ServerError),
        (Error(200, b"this is not json"), llmrouter.ProtocolError),
    ],
)
async def test_a_200_that_is_not_a_completion(
    mode: str, fake: OpenAIFake, response: Error, cls: type[Exception]
) -> None:
    fake.script(response)
    with pytest.raises(cls):
        await create(mode, fake.url, model="m")


# ---------------------------------------------------------------------------------------------
# Streaming: framing variants


def _variant(name: str) -> tuple[list[bytes], str, bool]:
    """(frames, expected text, ends with a usage-only chunk)."""
    if name == "plain":
        return sse("Hel", "lo", " world"), "Hello world", False
    if name == "keep_alive":
        frames = [comment(), role_frame(), comment(), *content_frames("Hel", "lo"), comment()]
        return [*frames, b":\n\n", finish_frame(), DONE], "Hello", False
    if name == "no_space":
        return sse("Hel", "lo", space=False), "Hello", False
    if name == "crlf":
        return [comment(crlf=True), *sse("Hel", "lo", crlf=True)], "Hello", False
    if name == "usage":
        return sse("Hel", "lo", usage=True), "Hello", True
    raise AssertionError(name)


VARIANTS = ["plain", "keep_alive", "no_space", "crlf", "usage"]


def _check_stream(chunks: list[Any], text: str, usage_last: bool) -> None:
    assert text_of(chunks) == text
    assert chunks[0].choices[0].delta.role == "assistant"
    final = chunks[-1]
    if usage_last:
        assert final.choices == []
        assert final.usage.total_tokens == USAGE["total_tokens"]
        final = chunks[-2]
    assert final.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("variant", VARIANTS)
async def test_stream_variants_over_sockets(mode: str, fake: OpenAIFake, variant: str) -> None:
    frames, text, usage_last = _variant(variant)
    fake.script(Stream(frames, split=7), Stream(frames, chunked=False, split=3))
    for _ in range(2):  # chunked, then close-delimited
        chunks: list[Any] = []
        s = await stream(mode, fake.url, chunks, model="m")
        _check_stream(chunks, text, usage_last)
        assert s.text == text
        assert [a.error for a in s.route.attempts] == [None]


class _Bytes(httpx2.SyncByteStream, httpx2.AsyncByteStream):
    """A response body handed over in pieces of ``size`` bytes."""

    def __init__(self, data: bytes, size: int) -> None:
        self._pieces = [data[i : i + size] for i in range(0, len(data), size)]

    def __iter__(self) -> Iterator[bytes]:
        yield from self._pieces

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self._pieces:
            yield piece


def _sse_handler(body: bytes, size: int) -> Callable[[httpx2.Request], httpx2.Response]:
    def handler(request: httpx2.Request) -> httpx2.Response:
        headers = {"content-type": "text/event-stream"}
        return httpx2.Response(200, headers=headers, stream=_Bytes(body, size))

    return handler


async def _mock_stream(
    mode: str, body: bytes, size: int, into: list[Any] | None = None
) -> list[Any]:
    """Stream a chat whose body is handed over in ``size``-byte pieces; every chunk goes to
    ``into`` (kept when it raises)."""
    mock = httpx2.MockTransport(_sse_handler(body, size))
    chunks: list[Any] = [] if into is None else into
    if mode == "sync":
        transport = SyncHTTPTransport(transport=mock)
        with llmrouter.Client(
            "http://mock.test/v1?model=m", transport=transport, **OPTIONS
        ) as client:
            sync_stream = client.chat.completions.create(messages=MESSAGES, stream=True)
            with sync_stream:
                for chunk in sync_stream:
                    chunks.append(chunk)
        return chunks
    atransport = HttpxAsyncTransport(transport=mock)
    aclient = llmrouter.AsyncClient("http://mock.test/v1?model=m", transport=atransport, **OPTIONS)  # type: ignore[arg-type]
    async with aclient:
        s = await aclient.chat.completions.create(messages=MESSAGES, stream=True)
        async with s:
            async for chunk in s:
                chunks.append(chunk)
    return chunks


@pytest.mark.parametrize("variant", VARIANTS)
async def test_stream_byte_at_a_time_equals_whole(mode: str, variant: str) -> None:
    frames, text, usage_last = _variant(variant)
    body = b"".join(frames)
    whole = await _mock_stream(mode, body, len(body))
    by_byte = await _mock_stream(mode, body, 1)
    _check_stream(by_byte, text, usage_last)
    assert [c.model_dump() for c in by_byte] == [c.model_dump() for c in whole]


# ---------------------------------------------------------------------------------------------
# Streaming: failures


async def test_mid_stream_error_after_content_is_an_interruption(
    mode: str, fake: OpenAIFake
) -> None:
    frames = [role_frame(), *content_frames("Hel"), error_frame("engine died", code=500), DONE]
    fake.script(Stream(frames, delay=0.02))  # the content arrives before the error
    chunks: list[Any] = []
    with pytest.raises(llmrouter.StreamInterruptedError) as info:
        await stream(mode, fake.url, chunks, model="m")
    assert info.value.partial_text == "Hel"
    assert text_of(chunks) == "Hel"
    assert isinstance(info.value.__cause__, llmrouter.ServerError)
    assert "engine died" in str(info.value)


@pytest.mark.parametrize(
    "bad", [error_frame("engine died", code=500), b"data: {not json\n\n"], ids=["error", "garbage"]
)
async def test_content_read_together_with_a_failing_event_is_not_lost(
    mode: str, bad: bytes
) -> None:
    # Regression test (found while writing this suite).
    body = b"".join([role_frame(), *content_frames("Hel"), bad, DONE])
    chunks: list[Any] = []
    with pytest.raises(llmrouter.StreamInterruptedError) as info:
        await _mock_stream(mode, body, len(body), chunks)
    assert text_of(chunks) == "Hel"
    assert info.value.partial_text == "Hel"


async def test_mid_stream_error_before_content_raises_the_typed_error(
    mode: str, fake: OpenAIFake, fake2: OpenAIFake
) -> None:
    # TGI reports http_status_code 422 in the event: a bad request, which does not fail over.
    frames = [role_frame(), error_frame("Input validation error", http_status_code=422), DONE]
    fake.script(Stream(frames))
    with pytest.raises(llmrouter.BadRequestError, match="Input validation error"):
        await stream(mode, f"{fake.url}?model=m, {fake2.url}?model=m", [])
    assert fake2.chat_requests == []


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "close_delimited"])
async def test_stream_cut_after_content_keeps_the_partial_text(
    mode: str, fake: OpenAIFake, fake2: OpenAIFake, chunked: bool
) -> None:
    fake.script(Stream([role_frame(), *content_frames("Hel", "lo")], cut=True, chunked=chunked))
    chunks: list[Any] = []
    with pytest.raises(llmrouter.StreamInterruptedError) as info:
        await stream(mode, f"{fake.url}?model=m, {fake2.url}?model=m", chunks)
    assert info.value.partial_text == "Hello"
    assert info.value.backend == f"{fake.url}?model=m"
    assert isinstance(info.value.__cause__, llmrouter.BackendConnectionError)
    assert fake2.chat_requests == []  # content was delivered: never resent elsewhere


@pytest.mark.parametrize(
    "first",
    [
        Stream([role_frame()], cut=True),
        Stream([], cut=True, chunked=False),
        Close(),
        Stream([role_frame(), b"data: {not json\n\n"]),
    ],
    ids=["role_then_cut", "headers_then_eof", "no_response", "malformed_event"],
)
async def test_stream_failing_before_content_fails_over(
    mode: str, fake: OpenAIFake, fake2: OpenAIFake, first: Any
) -> None:
    fake.script(first)
    fake2.script(Stream(sse("Hi", " there")))
    chunks: list[Any] = []
    s = await stream(mode, f"{fake.url}?model=m, {fake2.url}?model=m", chunks)
    assert text_of(chunks) == "Hi there"
    assert s.route.backend == f"{fake2.url}?model=m"
    assert len(s.route.attempts) == 2
    assert isinstance(
        s.route.attempts[0].error, llmrouter.BackendConnectionError | llmrouter.ProtocolError
    )
    assert s.route.attempts[1].error is None


# ---------------------------------------------------------------------------------------------
# Failover chains and connection failures


@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "stream"])
async def test_refused_first_backend_fails_over(
    mode: str, fake: OpenAIFake, closed_url: str, streamed: bool
) -> None:
    url = f"{closed_url}?model=m, {fake.url}"
    if streamed:
        chunks: list[Any] = []
        route = (await stream(mode, url, chunks)).route
        assert text_of(chunks) == "Hello!"
    else:
        resp = await create(mode, url)
        assert resp.choices[0].message.content == "Hello!"
        route = resp.route
    assert route.backend == fake.url
    assert [a.backend for a in route.attempts] == [f"{closed_url}?model=m", fake.url]
    assert isinstance(route.attempts[0].error, llmrouter.BackendConnectionError)
    assert route.attempts[1].error is None


async def test_single_refused_backend_raises_connection_error(mode: str, closed_url: str) -> None:
    with pytest.raises(llmrouter.BackendConnectionError) as info:
        await create(mode, closed_url + "?model=m")
    assert info.value.backend == closed_url + "?model=m"


async def test_all_backends_failing(
    mode: str, fake: OpenAIFake, fake2: OpenAIFake, closed_url: str
) -> None:
    fake.script(Error(500, {"error": {"message": "engine dead"}}))
    fake2.script(Error(503, b"overloaded"))
    names = [f"{closed_url}?model=m", f"{fake.url}?model=m", f"{fake2.url}?model=m"]
    with pytest.raises(llmrouter.AllBackendsFailedError) as info:
        await create(mode, ", ".join(names))
    error = info.value
    assert [type(e) for e in error.errors] == [
        llmrouter.BackendConnectionError,
        llmrouter.ServerError,
        llmrouter.ServerError,
    ]
    assert [a.backend for a in error.attempts] == names
    for name in names:
        assert name in str(error)
    assert "engine dead" in str(error)


@pytest.mark.parametrize(
    "response",
    [
        Error(400, {"error": {"message": "bad"}}),
        Error(422, {"error": "Input validation error", "error_type": "validation"}),
        Error(500, PYDANTIC_500),
    ],
    ids=["400", "422_tgi", "500_llama_cpp_python_validation"],
)
async def test_non_retryable_errors_do_not_fail_over(
    mode: str, fake: OpenAIFake, fake2: OpenAIFake, response: Error
) -> None:
    fake.script(response)
    with pytest.raises(llmrouter.StatusError) as info:
        await create(mode, f"{fake.url}?model=m, {fake2.url}?model=m")
    assert info.value.status_code == response.status
    assert fake2.requests == []


# ---------------------------------------------------------------------------------------------
# Connections: early close, reuse, timeouts


async def test_closing_a_stream_early_closes_the_connection(mode: str, fake: OpenAIFake) -> None:
    fake.script(Stream(sse(*"abcdefgh", done=False, finish=None), hold=True))
    chunks: list[Any] = []
    s = await stream(mode, fake.url + "?model=m", chunks, limit=3)
    assert text_of(chunks) == "ab"
    assert await fake.async_wait_for(lambda: fake.disconnects == 1)
    assert len(s.route.attempts) == 1


async def test_connection_is_reused_after_a_complete_stream(mode: str, fake: OpenAIFake) -> None:
    fake.script(Stream(sse("a")), Stream(sse("b")), Stream(sse("c")))
    chunks: list[Any] = []
    await stream(mode, fake.url + "?model=m", chunks, times=3)
    assert text_of(chunks) == "abc"
    assert fake.connections == 1
    assert fake.disconnects == 0


@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "stream"])
async def test_timeout_with_a_stalling_server(mode: str, fake: OpenAIFake, streamed: bool) -> None:
    fake.script(Stall())
    started = time.monotonic()
    with pytest.raises(llmrouter.BackendTimeoutError):
        await call(mode, fake.url + "?model=m", streamed, timeout=0.5)
    assert time.monotonic() - started < 5.0
    assert await fake.async_wait_for(lambda: fake.disconnects == 1)


async def test_stall_after_content_times_out_as_an_interruption(
    mode: str, fake: OpenAIFake
) -> None:
    fake.script(Stream([role_frame(), *content_frames("Hel")], hold=True))
    started = time.monotonic()
    with pytest.raises(llmrouter.StreamInterruptedError) as info:
        await stream(mode, fake.url + "?model=m", [], timeout=0.5)
    assert time.monotonic() - started < 5.0
    assert info.value.partial_text == "Hel"
    assert isinstance(info.value.__cause__, llmrouter.BackendTimeoutError)


async def test_stream_ends_at_done_even_if_the_connection_stays_open(
    mode: str, fake: OpenAIFake
) -> None:
    # Regression test (found while writing this suite).
    fake.script(Stream(sse("Hi"), hold=True))
    chunks: list[Any] = []
    await stream(mode, fake.url + "?model=m", chunks, timeout=0.5)
    assert text_of(chunks) == "Hi"


async def test_timeout_bounds_the_whole_streamed_request(mode: str, fake: OpenAIFake) -> None:
    # Regression test (found while writing this suite).
    fake.script(Stream(sse(*"abcdefgh"), delay=0.1))
    started = time.monotonic()
    with pytest.raises((llmrouter.StreamInterruptedError, llmrouter.BackendTimeoutError)):
        await stream(mode, fake.url + "?model=m", [], timeout=0.3)
    assert time.monotonic() - started < 0.9


def test_frame_helpers_follow_the_protocol() -> None:
    # The helpers produce the protocol's exact framing (openai-chat.md section 3).
    assert frame("[DONE]") == b"data: [DONE]\n\n"
    assert frame({"a": 1}, space=False, crlf=True) == b'data:{"a":1}\r\n\r\n'
    assert json.loads(usage_frame()[6:])["choices"] == []

"""Plain Python functions as backends (``Client(backends=[fn])``), sync and async: plain and
streamed answers, failover from a failing function to a working one, and the deadline checked
between the pieces a generator yields."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

import llmrouter
from llmrouter._request import ChatRequest
from llmrouter.policy import RetryPolicy

HI = [{"role": "user", "content": "hi"}]
OPTIONS: dict[str, Any] = {"retry_policy": RetryPolicy.testing(max_retries=0)}


def echo(request: ChatRequest) -> str:
    return "echo: " + str(request.messages[-1]["content"])


def pieces(request: ChatRequest) -> Iterator[str]:
    yield from ("Hel", "lo", " there")


def down(request: ChatRequest) -> str:
    raise llmrouter.BackendConnectionError("the function's server is down", backend="down")


def slow(request: ChatRequest) -> Iterator[str]:
    yield "first"
    threading.Event().wait(0.3)  # past the call's 0.1 s deadline
    yield "never"


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def ask(mode: str, backends: list[Any], *, stream: bool = False, **kw: Any) -> Any:
    """``(text, route)`` of one chat through ``Client`` or ``AsyncClient``."""
    if mode == "sync":
        with llmrouter.Client(backends=backends, **OPTIONS) as client:
            if not stream:
                resp = client.chat.completions.create(messages=HI, **kw)
                return resp.choices[0].message.content, resp.route
            with client.chat.completions.create(messages=HI, stream=True, **kw) as s:
                text = "".join(c.choices[0].delta.content or "" for c in s if c.choices)
                return text, s.route
    async with llmrouter.AsyncClient(backends=backends, **OPTIONS) as aclient:
        if not stream:
            resp = await aclient.chat.completions.create(messages=HI, **kw)
            return resp.choices[0].message.content, resp.route
        async with await aclient.chat.completions.create(messages=HI, stream=True, **kw) as s:
            text = "".join([c.choices[0].delta.content or "" async for c in s if c.choices])
            return text, s.route


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_a_function_answers(mode: str, stream: bool) -> None:
    text, route = await ask(mode, [echo], stream=stream)
    assert text == "echo: hi"
    assert route.backend == "echo"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_a_generator_streams_its_pieces(mode: str, stream: bool) -> None:
    text, _ = await ask(mode, [pieces], stream=stream)
    assert text == "Hello there"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_a_failing_function_fails_over_to_the_next(mode: str, stream: bool) -> None:
    text, route = await ask(mode, [down, echo], stream=stream)
    assert text == "echo: hi"
    assert route.backend == "echo"
    assert [a.backend for a in route.attempts] == ["down", "echo"]
    assert isinstance(route.attempts[0].error, llmrouter.BackendConnectionError)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_the_deadline_is_checked_between_pieces(mode: str, stream: bool) -> None:
    with pytest.raises((llmrouter.BackendTimeoutError, llmrouter.StreamInterruptedError)) as info:
        await ask(mode, [slow], stream=stream, timeout=0.1)
    error = info.value
    if isinstance(error, llmrouter.StreamInterruptedError):  # after "first" reached the caller
        assert error.partial_text == "first"
        assert isinstance(error.__cause__, llmrouter.BackendTimeoutError)

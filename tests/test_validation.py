"""Bad input is an InvalidRequestError raised before anything is sent."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from llmrouter import AsyncClient, Client, InvalidRequestError
from llmrouter._http import HttpxAsyncTransport, SyncHTTPTransport

OK = [{"role": "user", "content": "hi"}]


def _never_called(request: httpx2.Request) -> httpx2.Response:
    raise AssertionError(f"nothing should be sent, got {request.method} {request.url}")


@pytest.fixture
def client() -> Client:
    return Client(
        "http://127.0.0.1:9/v1?model=m",
        transport=SyncHTTPTransport(transport=httpx2.MockTransport(_never_called)),
    )


CASES: list[tuple[dict[str, Any], str, str]] = [
    ({"messages": []}, "messages", "at least one message"),
    ({"messages": "hi"}, "messages", "expected a list"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role", "expected one of"),
    ({"messages": [{"content": "x"}]}, "messages[0].role", "got None"),
    ({"messages": ["hi"]}, "messages[0]", "expected a dict"),
    ({"messages": [{"role": "user", "content": 42}]}, "messages[0].content", "got int"),
    ({"messages": [{"role": "user"}]}, "messages[0].content", "required"),
    (
        {"messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {}}]}]},
        "messages[0].content[0]",
        "only text parts",
    ),
    (
        {"messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]},
        "messages[0].content[0].text",
        "expected a string",
    ),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id", "required"),
    (
        {
            "messages": [
                {
                    "role": "assistant",
                    "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}],
                }
            ]
        },
        "messages[0].tool_calls[0]",
        "JSON string",
    ),
    ({"temperature": 2.5}, "temperature", r"\[0, 2\]"),
    ({"temperature": -0.1}, "temperature", r"\[0, 2\]"),
    ({"temperature": "hot"}, "temperature", "expected a number"),
    ({"top_p": 1.5}, "top_p", r"\[0, 1\]"),
    ({"max_tokens": 0}, "max_tokens", ">= 1"),
    ({"max_tokens": 2.5}, "max_tokens", "expected an integer"),
    ({"max_completion_tokens": -3}, "max_completion_tokens", ">= 1"),
    ({"n": 0}, "n", r"in \[1, 128\]"),
    ({"stream": "yes"}, "stream", "expected True or False"),
    ({"stop": 5}, "stop", "string or a list"),
    ({"seed": "x"}, "seed", "integer"),
    ({"tools": [{"type": "function"}]}, "tools[0]", "function.name"),
    ({"response_format": {"type": "yaml"}}, "response_format", "json_object"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema", "required"),
    ({"top_logprobs": 3}, "top_logprobs", "requires logprobs"),
    ({"model": ""}, "model", "non-empty"),
    ({"timeout": 0}, "timeout", "positive"),
    ({"extra_body": [1]}, "extra_body", "dict"),
    ({"temprature": 0.5}, "temprature", "unknown keyword argument.*temprature"),
    ({"foo": 1, "bar": 2}, "bar", "unknown keyword argument.*bar, foo"),
]


@pytest.mark.parametrize(("kwargs", "param", "message"), CASES)
def test_bad_input_is_refused_before_sending(
    client: Client, kwargs: dict[str, Any], param: str, message: str
) -> None:
    call = {"messages": OK, **kwargs}
    with pytest.raises(InvalidRequestError, match=message) as info:
        client.chat.completions.create(**call)
    assert info.value.param == param
    assert isinstance(info.value, ValueError)


async def test_async_client_validates_the_same_way() -> None:
    client = AsyncClient(
        "http://127.0.0.1:9/v1?model=m",
        transport=HttpxAsyncTransport(transport=httpx2.MockTransport(_never_called)),
    )
    for kwargs, param, message in CASES:
        with pytest.raises(InvalidRequestError, match=message) as info:
            await client.chat.completions.create(**{"messages": OK, **kwargs})
        assert info.value.param == param
    await client.aclose()


def test_valid_shapes_pass(client: Client) -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        import json

        seen.append(json.loads(request.content))
        return httpx2.Response(500, json={"error": {"message": "stop here"}})

    ok = Client(
        "http://127.0.0.1:9/v1?model=m",
        transport=SyncHTTPTransport(transport=httpx2.MockTransport(handler)),
    )
    messages = [
        {"role": "developer", "content": [{"type": "text", "text": "be brief"}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "hi"},
                {"type": "image_url", "image_url": {"url": "data:x"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ]
    with pytest.raises(Exception, match="stop here"):
        ok.chat.completions.create(
            messages=messages,
            temperature=0,
            top_p=1,
            stop=["x"],
            max_completion_tokens=5,
            logprobs=True,
            top_logprobs=2,
        )
    assert seen[0]["messages"] == messages

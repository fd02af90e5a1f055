"""The Bedrock Converse codec, pure: request bodies, answers, stream events and errors."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llmrouter import ConfigError, InvalidRequestError
from llmrouter._request import build_request
from llmrouter.backends import bedrock
from llmrouter.backends._eventstream import encode_message
from llmrouter.config import parse_backend
from llmrouter.errors import (
    AuthenticationError,
    BadRequestError,
    ContextLengthError,
    NotFoundError,
    ProtocolError,
    RateLimitError,
    ServerError,
)

URL = "bedrock://anthropic.claude-3-5-haiku-20241022-v1:0?region=us-east-1"
SPEC = parse_backend(URL, env={})
HI = [{"role": "user", "content": "hi"}]
WEATHER = {"type": "function", "function": {"name": "w", "parameters": {"type": "object"}}}


def body(messages: Any = HI, **kw: Any) -> dict[str, Any]:
    return bedrock.converse_body(build_request(messages, False, kw))


def test_url_forms() -> None:
    assert SPEC.model == "anthropic.claude-3-5-haiku-20241022-v1:0"
    arn = "arn:aws:bedrock:us-east-1:1:inference-profile/us.x-v1:0"
    encoded = parse_backend("bedrock://" + arn.replace(":", "%3A").replace("/", "%2F"), env={})
    assert bedrock.model_id(encoded) == arn
    assert bedrock.model_id(parse_backend(f"bedrock://?model={arn}", env={})) == arn
    with pytest.raises(ConfigError):
        parse_backend("bedrock://?region=us-east-1", env={})
    assert bedrock._path_id(arn) == "arn:aws:bedrock:us-east-1:1:inference-profile%2Fus.x-v1:0"
    spec = parse_backend(URL + "&endpoint=http://127.0.0.1:9", env={})
    assert bedrock.runtime_url(spec, {}) == "http://127.0.0.1:9"
    assert bedrock.runtime_url(SPEC, {}) == "https://bedrock-runtime.us-east-1.amazonaws.com"


def test_messages_roles_and_merging() -> None:
    msgs = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "a"},
        {"role": "user", "content": [{"type": "text", "text": "b"}]},
        {"role": "assistant", "content": "c"},
    ]
    out = body(msgs)
    assert out["system"] == [{"text": "S"}]
    assert out["messages"] == [
        {"role": "user", "content": [{"text": "a"}, {"text": "b"}]},
        {"role": "assistant", "content": [{"text": "c"}]},
    ]


def test_tools_and_choices() -> None:
    out = body(tools=[WEATHER], tool_choice="required")
    assert out["toolConfig"]["toolChoice"] == {"any": {}}
    assert out["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"] == {"json": {"type": "object"}}
    named = {"type": "function", "function": {"name": "w"}}
    assert body(tools=[WEATHER], tool_choice=named)["toolConfig"]["toolChoice"] == {
        "tool": {"name": "w"}
    }
    assert body(tools=[WEATHER])["toolConfig"]["toolChoice"] == {"auto": {}}
    assert "toolConfig" not in body(tools=[WEATHER], tool_choice="none")


def test_json_schema_is_a_forced_tool_and_json_object_is_refused() -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "city", "schema": {"type": "object"}}}
    config = body(response_format=fmt)["toolConfig"]
    assert config["toolChoice"] == {"tool": {"name": "json_response__city"}}
    with pytest.raises(InvalidRequestError):
        body(response_format={"type": "json_object"})


@pytest.mark.parametrize(
    "kw",
    [
        {"seed": 1},
        {"n": 2},
        {"logprobs": True},
        {"presence_penalty": 0.5},
        {"logit_bias": {"1": 1}},
    ],
)
def test_refused_parameters(kw: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequestError):
        body(**kw)


def test_image_url_must_be_base64() -> None:
    part = {"type": "image_url", "image_url": {"url": "https://x/y.png"}}
    with pytest.raises(InvalidRequestError):
        body([{"role": "user", "content": [part]}])


@pytest.mark.parametrize(
    ("reason", "finish"),
    [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"),
     ("tool_use", "tool_calls"), ("guardrail_intervened", "content_filter"),
     ("content_filtered", "content_filter")],
)  # fmt: skip
def test_finish_reasons(reason: str, finish: str) -> None:
    answer = {
        "output": {"message": {"role": "assistant", "content": [{"text": "x"}]}},
        "stopReason": reason,
        "usage": {"inputTokens": 3, "outputTokens": 2, "totalTokens": 5, "cacheReadInputTokens": 1},
    }
    resp = bedrock.parse_chat(SPEC, json.dumps(answer).encode())
    assert resp.choices[0].finish_reason == finish
    assert resp.usage is not None and resp.usage.prompt_tokens == 4 and resp.usage.total_tokens == 6


def test_garbage_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        bedrock.parse_chat(SPEC, b"{nope")
    with pytest.raises(ProtocolError):
        bedrock.parse_chat(SPEC, b'{"output": 1}')


def _event(kind: str, payload: dict[str, Any]) -> bytes:
    headers = {":event-type": kind, ":content-type": "application/json", ":message-type": "event"}
    return encode_message(headers, json.dumps(payload).encode())


def test_stream_decoder_byte_by_byte() -> None:
    data = b"".join(
        [
            _event("messageStart", {"role": "assistant"}),
            _event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hi"}}),
            _event(
                "contentBlockStart",
                {"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "t", "name": "w"}}},
            ),
            _event(
                "contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": "{}"}}}
            ),
            _event("messageStop", {"stopReason": "tool_use"}),
            _event("metadata", {"usage": {"inputTokens": 1, "outputTokens": 2, "totalTokens": 3}}),
        ]
    )
    decoder = bedrock.ChunkDecoder(SPEC)
    chunks = []
    for i in range(len(data)):
        for event in decoder.feed(data[i : i + 1]):
            chunk = decoder.parse(event)
            if chunk is not None:
                chunks.append(chunk)
    assert decoder.done
    assert chunks[1].choices[0].delta.content == "Hi"
    assert chunks[2].choices[0].delta.tool_calls[0].id == "t"
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 3


def test_stream_without_metadata_still_finishes() -> None:
    decoder = bedrock.ChunkDecoder(SPEC)
    events = decoder.feed(_event("messageStop", {"stopReason": "end_turn"}))
    assert [decoder.parse(e) for e in events] == [None]
    (last,) = [decoder.parse(e) for e in decoder.close()]
    assert last is not None and last.choices[0].finish_reason == "stop"
    decoder.check_end()


@pytest.mark.parametrize(
    ("status", "code", "message", "cls"),
    [
        (429, "ThrottlingException", "slow", RateLimitError),
        (503, "ServiceUnavailableException", "x", ServerError),
        (400, "ValidationException", "Input is too long for requested model.", ContextLengthError),
        (400, "ValidationException", "The provided model identifier is invalid.", NotFoundError),
        (400, "ValidationException", "bad", BadRequestError),
        (403, "AccessDeniedException", "no", AuthenticationError),
        (404, "ResourceNotFoundException", "no", NotFoundError),
    ],
)
def test_map_error(status: int, code: str, message: str, cls: type) -> None:
    headers = {
        "x-amzn-ErrorType": f"{code}:http://internal.amazon.com/coral/",
        "x-amzn-RequestId": "r",
    }
    error = bedrock.map_error(SPEC, status, headers, json.dumps({"message": message}).encode())
    assert type(error) is cls and error.request_id == "r" and error.error_type == code

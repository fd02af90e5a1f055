"""The Gemini codec, pure: request bodies, the schema subset, answers, streams and errors."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llmrouter import InvalidRequestError
from llmrouter._request import build_request
from llmrouter.backends import gemini
from llmrouter.config import parse_backend
from llmrouter.errors import (
    AuthenticationError,
    BadRequestError,
    ContextLengthError,
    NotFoundError,
    RateLimitError,
    ServerError,
)

SPEC = parse_backend("gemini://?model=gemini-2.5-flash", env={"GEMINI_API_KEY": "k"})
HI = [{"role": "user", "content": "hi"}]


def body(messages: Any = HI, **kw: Any) -> dict[str, Any]:
    return gemini.request_body(SPEC, build_request(messages, False, kw))


def test_urls_and_key() -> None:
    assert SPEC.base_url == "https://generativelanguage.googleapis.com/v1beta"
    assert parse_backend("gemini://", env={"GOOGLE_API_KEY": "g"}).api_key is not None
    http = gemini.build_chat(SPEC, build_request(HI, True, {}), "gemini-2.5-flash")
    assert http.url.endswith("/models/gemini-2.5-flash:streamGenerateContent?alt=sse")
    assert http.headers["x-goog-api-key"] == "k" and "k" not in http.url
    vertex = parse_backend("vertex://proj-123/europe-west4?model=m&token_env=T", env={})
    assert vertex.base_url == (
        "https://europe-west4-aiplatform.googleapis.com/v1/projects/proj-123/"
        "locations/europe-west4/publishers/google"
    )
    glob = parse_backend("vertex://proj-123/global?model=m", env={})
    assert glob.base_url.startswith("https://aiplatform.googleapis.com/v1/projects/proj-123/")


def test_roles_system_and_parallel_tool_results() -> None:
    calls = [
        {"id": f"c{i}", "type": "function", "function": {"name": n, "arguments": "{}"}}
        for i, n in enumerate(["a", "b"])
    ]
    out = body(
        [
            {"role": "system", "content": "S"},
            *HI,
            {"role": "assistant", "content": None, "tool_calls": calls},
            {"role": "tool", "tool_call_id": "c0", "content": "1"},
            {"role": "tool", "tool_call_id": "c1", "content": '{"x": 2}'},
        ]
    )
    assert out["systemInstruction"] == {"parts": [{"text": "S"}]}
    assert [c["role"] for c in out["contents"]] == ["user", "model", "user"]
    responses = [p["functionResponse"] for p in out["contents"][2]["parts"]]
    assert responses == [
        {"name": "a", "response": {"result": "1"}},
        {"name": "b", "response": {"x": 2}},
    ]


def test_tool_choice_modes() -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "w",
            "parameters": {"type": "object", "properties": {"c": {"type": "string"}}},
        },
    }
    assert body(tools=[tool], tool_choice="required")["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY"}
    }
    named = body(tools=[tool], tool_choice={"type": "function", "function": {"name": "w"}})
    assert named["toolConfig"]["functionCallingConfig"]["allowedFunctionNames"] == ["w"]
    assert (
        body(tools=[tool])["tools"][0]["functionDeclarations"][0]["parameters"]["type"] == "OBJECT"
    )


def test_response_schema_subset() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": ["string", "null"]}, "b": {"$ref": "#/$defs/B"}},
        "required": ["a"],
        "additionalProperties": False,
        "$defs": {"B": {"type": "array", "items": {"enum": ["x", "y"]}}},
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "n", "schema": schema}}
    config = body(response_format=fmt)["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert config["responseSchema"] == {
        "type": "OBJECT",
        "properties": {
            "a": {"nullable": True, "type": "STRING"},
            "b": {"type": "ARRAY", "items": {"enum": ["x", "y"], "type": "STRING"}},
        },
        "required": ["a"],
    }
    assert body(response_format={"type": "json_object"})["generationConfig"] == {
        "responseMimeType": "application/json"
    }


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "additionalProperties": {"type": "string"}},
        {"oneOf": [{"type": "string"}, {"type": "integer"}]},
        {"allOf": [{"type": "string"}]},
        {
            "type": "object",
            "properties": {"n": {"$ref": "#/$defs/N"}},
            "$defs": {"N": {"type": "object", "properties": {"n": {"$ref": "#/$defs/N"}}}},
        },
        {"type": "array", "items": [{"type": "string"}]},
        {"type": ["string", "integer"]},
    ],
)
def test_inexpressible_schemas_are_refused(schema: dict[str, Any]) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "n", "schema": schema}}
    with pytest.raises(InvalidRequestError):
        body(response_format=fmt)


def test_parameters() -> None:
    config = body(temperature=0.2, top_p=0.5, max_tokens=9, stop="x", seed=3)["generationConfig"]
    assert config == {
        "temperature": 0.2,
        "topP": 0.5,
        "seed": 3,
        "maxOutputTokens": 9,
        "stopSequences": ["x"],
    }
    for kw in ({"n": 2}, {"logprobs": True}, {"logit_bias": {"1": 1}}):
        with pytest.raises(InvalidRequestError):
            body(**kw)


def _answer(**candidate: Any) -> bytes:
    data = {
        "candidates": [{"content": {"role": "model", "parts": [{"text": "x"}]}, **candidate}],
        "usageMetadata": {
            "promptTokenCount": 4,
            "candidatesTokenCount": 2,
            "thoughtsTokenCount": 3,
            "totalTokenCount": 9,
        },
    }
    return json.dumps(data).encode()


@pytest.mark.parametrize(
    ("reason", "finish"),
    [("STOP", "stop"), ("MAX_TOKENS", "length"), ("SAFETY", "content_filter"),
     ("RECITATION", "content_filter"), ("BLOCKLIST", "content_filter"), ("OTHER", "stop")],
)  # fmt: skip
def test_finish_reasons_usage_and_ratings(reason: str, finish: str) -> None:
    ratings = [{"category": "HARM_CATEGORY_HARASSMENT", "probability": "HIGH", "blocked": True}]
    resp = gemini.parse_chat(SPEC, _answer(finishReason=reason, safetyRatings=ratings))
    choice = resp.choices[0]
    assert choice.finish_reason == finish
    assert (
        resp.usage is not None
        and resp.usage.completion_tokens == 5
        and resp.usage.total_tokens == 9
    )
    assert resp.usage.model_dump()["completion_tokens_details"]["reasoning_tokens"] == 3
    if finish == "content_filter":
        assert choice.model_extra["safety_ratings"] == ratings


def test_blocked_prompt_is_an_error() -> None:
    blocked = {"promptFeedback": {"blockReason": "SAFETY", "safetyRatings": []}}
    with pytest.raises(BadRequestError) as info:
        gemini.parse_chat(SPEC, json.dumps(blocked).encode())
    assert info.value.error_type == "prompt_blocked"
    decoder = gemini.ChunkDecoder(SPEC)
    with pytest.raises(BadRequestError):
        decoder.parse(json.dumps(blocked).encode())


@pytest.mark.parametrize(
    ("status", "code", "message", "cls"),
    [
        (429, "RESOURCE_EXHAUSTED", "quota", RateLimitError),
        (
            400,
            "INVALID_ARGUMENT",
            "The input token count (2000000) exceeds the maximum number of tokens allowed (1048576).",  # noqa: E501
            ContextLengthError,
        ),
        (400, "INVALID_ARGUMENT", "bad", BadRequestError),
        (401, "UNAUTHENTICATED", "no", AuthenticationError),
        (403, "PERMISSION_DENIED", "no", AuthenticationError),
        (404, "NOT_FOUND", "no", NotFoundError),
        (500, "INTERNAL", "x", ServerError),
        (503, "UNAVAILABLE", "x", ServerError),
    ],
)
def test_map_error(status: int, code: str, message: str, cls: type) -> None:
    details = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "13.5s"}]
    raw = json.dumps(
        {"error": {"code": status, "message": message, "status": code, "details": details}}
    )
    error = gemini.map_error(SPEC, status, {}, raw.encode())
    assert type(error) is cls and error.error_type == code and error.retry_after == 13.5


def test_bad_key_is_an_authentication_error() -> None:
    details = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]
    raw = json.dumps(
        {
            "error": {
                "code": 400,
                "message": "API key not valid.",
                "status": "INVALID_ARGUMENT",
                "details": details,
            }
        }
    )
    assert type(gemini.map_error(SPEC, 400, {}, raw.encode())) is AuthenticationError


def test_stream_parallel_calls_and_finish() -> None:
    decoder = gemini.ChunkDecoder(SPEC)
    parts = [
        {"functionCall": {"name": "a", "args": {}}},
        {"functionCall": {"name": "b", "args": {"x": 1}}},
    ]
    event = {
        "candidates": [{"content": {"parts": parts}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 1, "totalTokenCount": 2},
    }
    (raw,) = decoder.feed(b"data: " + json.dumps(event).encode() + b"\r\n\r\n")
    chunk = decoder.parse(raw)
    assert chunk is not None and chunk.choices[0].finish_reason == "tool_calls"
    assert [c.index for c in chunk.choices[0].delta.tool_calls] == [0, 1]
    assert decoder.finished
    decoder.check_end()

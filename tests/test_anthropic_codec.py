"""Unit tests of the Anthropic codec (``llmrouter.backends.anthropic``): pure, no sockets.

Wire facts: ``shared/protocols/anthropic.md`` (the stream below is its section 3 example).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from llmrouter import errors
from llmrouter._request import build_request
from llmrouter.backends import Capabilities
from llmrouter.backends import anthropic as codec
from llmrouter.config import BackendSpec, parse_backend

KEY = "sk-ant-unit-secret"
SPEC = parse_backend("anthropic://", {"ANTHROPIC_API_KEY": KEY})
HI = [{"role": "user", "content": "hi"}]
WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}}
WEATHER = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": "Weather", "parameters": WEATHER_SCHEMA},
    }
]


def text(value: str) -> dict[str, str]:
    return {"type": "text", "text": value}


def body_of(messages: Any = None, stream: bool = False, **kw: Any) -> dict[str, Any]:
    http = build(messages, stream, **kw)
    assert http.body is not None
    return dict(json.loads(http.body))


def build(messages: Any = None, stream: bool = False, spec: BackendSpec = SPEC, **kw: Any) -> Any:
    request = build_request(HI if messages is None else messages, stream, kw)
    return codec.build_chat(spec, request, "claude-x")


def refused(param: str, messages: Any = None, **kw: Any) -> errors.InvalidRequestError:
    with pytest.raises(errors.InvalidRequestError) as info:
        build(messages, **kw)
    assert info.value.param == param
    assert str(info.value).startswith("anthropic:// ")
    return info.value


# ---------------------------------------------------------------------------------------------
# Requests


def test_capabilities_are_declared() -> None:
    caps = codec.CAPABILITIES
    assert isinstance(caps, Capabilities)
    assert (caps.tools, caps.tool_choice, caps.json_schema, caps.stop) == (True, True, True, True)
    assert (caps.json_object, caps.seed, caps.n, caps.logprobs) == (False, False, False, False)


def test_request_line_headers_and_minimal_body() -> None:
    http = build(extra_headers={"anthropic-beta": "x"})
    assert (http.method, http.url) == ("POST", "https://api.anthropic.com/v1/messages")
    assert http.headers == {
        "Accept": "application/json",
        "Content-Type": "application/json",
        "anthropic-version": "2023-06-01",
        "x-api-key": KEY,
        "anthropic-beta": "x",
    }
    assert json.loads(http.body) == {"model": "claude-x", "max_tokens": 4096, "messages": HI}
    assert http.backend == SPEC.name
    assert KEY not in SPEC.name


def test_stream_flag_and_accept() -> None:
    http = build(stream=True)
    assert http.headers["Accept"] == "text/event-stream"
    assert json.loads(http.body)["stream"] is True


def test_max_tokens_sources() -> None:
    assert body_of(max_tokens=10)["max_tokens"] == 10
    assert body_of(max_tokens=10, max_completion_tokens=20)["max_tokens"] == 20
    assert body_of()["max_tokens"] == codec.DEFAULT_MAX_TOKENS == 4096


def test_extra_body_is_merged_last() -> None:
    body = body_of(extra_body={"top_k": 5, "thinking": {"type": "enabled", "budget_tokens": 1024}})
    assert body["top_k"] == 5
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 1024}


def test_sampling_parameters() -> None:
    body = body_of(temperature=1, top_p=0.5, stop="END", user="u-1", service_tier="auto")
    assert body["temperature"] == 1
    assert body["top_p"] == 0.5
    assert body["stop_sequences"] == ["END"]
    assert body["metadata"] == {"user_id": "u-1"}
    assert body["service_tier"] == "auto"
    assert body_of(service_tier="default")["service_tier"] == "standard_only"
    assert body_of(stop=["a", "b"])["stop_sequences"] == ["a", "b"]
    # Accepted no-ops: one choice, no logprobs, zero penalties, text only, OpenAI bookkeeping.
    quiet = body_of(
        n=1,
        logprobs=False,
        frequency_penalty=0,
        presence_penalty=0,
        modalities=["text"],
        store=True,
        metadata={"a": "b"},
        stream_options={"include_usage": True},
    )
    assert quiet == {"model": "claude-x", "max_tokens": 4096, "messages": HI}


def test_temperature_above_one_names_the_limit() -> None:
    err = refused("temperature", temperature=1.2)
    assert "between 0 and 1" in str(err)
    assert "1.2" in str(err)


@pytest.mark.parametrize(
    ("param", "kw"),
    [
        ("seed", {"seed": 1}),
        ("n", {"n": 2}),
        ("logprobs", {"logprobs": True}),
        ("logprobs", {"logprobs": True, "top_logprobs": 2}),
        ("frequency_penalty", {"frequency_penalty": 0.5}),
        ("presence_penalty", {"presence_penalty": -0.5}),
        ("logit_bias", {"logit_bias": {"1": 1}}),
        ("modalities", {"modalities": ["text", "audio"]}),
        ("audio", {"audio": {"voice": "x"}}),
        ("reasoning_effort", {"reasoning_effort": "low"}),
        ("service_tier", {"service_tier": "flex"}),
        ("response_format", {"response_format": {"type": "json_object"}}),
    ],
)
def test_unsupported_parameters_are_refused(param: str, kw: dict[str, Any]) -> None:
    refused(param, **kw)


def test_system_and_developer_are_lifted() -> None:
    one = body_of([{"role": "system", "content": "S"}, *HI])
    assert one["system"] == "S"
    assert one["messages"] == HI
    two = body_of(
        [
            {"role": "system", "content": [{"type": "text", "text": "A"}]},
            *HI,
            {"role": "developer", "content": "B"},
            {"role": "assistant", "content": "ok"},
        ]
    )
    assert two["system"] == [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}]
    assert [m["role"] for m in two["messages"]] == ["user", "assistant"]
    refused("messages", [{"role": "system", "content": "only a system prompt"}])


def test_same_role_turns_are_merged_and_empty_assistant_turns_dropped() -> None:
    body = body_of(
        [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": ""},
            {"role": "user", "content": "b"},
            {"role": "assistant", "content": [{"type": "text", "text": "c"}]},
            {"role": "assistant", "content": "d"},
        ]
    )
    assert body["messages"] == [
        {"role": "user", "content": [text("a"), text("b")]},
        {"role": "assistant", "content": [text("c"), text("d")]},
    ]


def test_tool_calls_and_results_become_tool_use_and_tool_result_blocks() -> None:
    calls = [
        {"id": "t1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}},
        {"id": "t2", "type": "function", "function": {"name": "g", "arguments": ""}},
    ]
    body = body_of(
        [
            *HI,
            {"role": "assistant", "content": None, "tool_calls": calls},
            {"role": "user", "content": "also this"},
            {"role": "tool", "tool_call_id": "t1", "content": "one"},
            {"role": "tool", "tool_call_id": "t2", "content": [{"type": "text", "text": "two"}]},
        ]
    )
    assistant, results = body["messages"][1:]
    assert assistant == {
        "role": "assistant",
        "content": [
            {"type": "tool_use", "id": "t1", "name": "f", "input": {"x": 1}},
            {"type": "tool_use", "id": "t2", "name": "g", "input": {}},
        ],
    }
    # One user turn; the tool results first, as the API requires.
    assert results == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": "one"},
            {"type": "tool_result", "tool_use_id": "t2", "content": [text("two")]},
            text("also this"),
        ],
    }


@pytest.mark.parametrize("arguments", ["not json", "[1, 2]", '"text"'])
def test_tool_call_arguments_must_be_a_json_object(arguments: str) -> None:
    call = {"id": "t1", "type": "function", "function": {"name": "f", "arguments": arguments}}
    refused(
        "messages[1].tool_calls[0].function.arguments",
        [*HI, {"role": "assistant", "tool_calls": [call]}],
    )


def test_images() -> None:
    def image(url: str) -> list[dict[str, Any]]:
        part = {"type": "image_url", "image_url": {"url": url, "detail": "low"}}
        return [{"role": "user", "content": [part]}]

    body = body_of(image("data:image/jpg;base64,AAAA"))
    assert body["messages"][0]["content"] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "AAAA"}}
    ]
    body = body_of(image("https://example.com/cat.png"))
    assert body["messages"][0]["content"][0]["source"] == {
        "type": "url",
        "url": "https://example.com/cat.png",
    }
    assert "image/bmp" in str(refused("messages[0].content[0]", image("data:image/bmp;base64,AA")))
    refused("messages[0].content[0]", image("ftp://example.com/cat.png"))
    audio = {"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}}
    refused("messages[0].content[0]", [{"role": "user", "content": [audio]}])


def test_tools_are_converted() -> None:
    strict = [{"type": "function", "function": {"name": "s", "strict": True}}]
    body = body_of(tools=WEATHER + strict)
    assert body["tools"] == [
        {"name": "get_weather", "description": "Weather", "input_schema": WEATHER_SCHEMA},
        {"name": "s", "input_schema": {"type": "object", "properties": {}}, "strict": True},
    ]
    assert "tool_choice" not in body


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"type": "auto"}),
        ("none", {"type": "none"}),
        ("required", {"type": "any"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"type": "tool", "name": "get_weather"},
        ),
    ],
)
def test_tool_choice_mapping(choice: Any, expected: dict[str, Any]) -> None:
    assert body_of(tools=WEATHER, tool_choice=choice)["tool_choice"] == expected


def test_tool_choice_edges() -> None:
    assert "tool_choice" not in body_of(tool_choice="auto")  # no tools: nothing to choose
    # Checked for every backend before any codec runs (llmrouter._request), so no scheme prefix.
    for kw in (
        {"tool_choice": "required"},
        {"tools": WEATHER, "tool_choice": {"type": "function"}},
    ):
        with pytest.raises(errors.InvalidRequestError) as info:
            build(**kw)
        assert info.value.param == "tool_choice"
    no_parallel = body_of(tools=WEATHER, tool_choice="required", parallel_tool_calls=False)
    assert no_parallel["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert body_of(tools=WEATHER, parallel_tool_calls=False)["tool_choice"] == {
        "type": "auto",
        "disable_parallel_tool_use": True,
    }
    reserved = [{"type": "function", "function": {"name": codec.JSON_TOOL_PREFIX + "x"}}]
    refused("tools[0]", tools=reserved)


def test_json_schema_becomes_a_forced_tool() -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "my answer", "schema": WEATHER_SCHEMA}}
    body = body_of(response_format=fmt)
    assert body["tools"] == [
        {
            "name": "json_response__my_answer",
            "description": "Give the answer as this tool's input.",
            "input_schema": WEATHER_SCHEMA,
        }
    ]
    assert body["tool_choice"] == {"type": "tool", "name": "json_response__my_answer"}
    strict = {"type": "json_schema", "json_schema": {"name": "s", "strict": True}}
    assert body_of(response_format=strict)["tools"][0] == {
        "name": "json_response__s",
        "description": "Give the answer as this tool's input.",
        "input_schema": {"type": "object", "properties": {}},
        "strict": True,
    }
    assert "tools" not in body_of(response_format={"type": "text"})
    refused("response_format", response_format=fmt, tools=WEATHER)
    array = {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "array"}}}
    refused("response_format.json_schema.schema", response_format=array)


def test_models_and_health_requests() -> None:
    models = codec.build_models(SPEC)
    assert (models.method, models.url) == ("GET", "https://api.anthropic.com/v1/models?limit=1000")
    assert models.headers["x-api-key"] == KEY
    assert models.headers["anthropic-version"] == "2023-06-01"
    health = codec.build_health(SPEC)
    assert (health.method, health.url) == ("GET", "https://api.anthropic.com/v1/models?limit=1")
    local = parse_backend("anthropic+http://127.0.0.1:9000", {"ANTHROPIC_API_KEY": KEY})
    assert codec.build_models(local).url == "http://127.0.0.1:9000/v1/models?limit=1000"


# ---------------------------------------------------------------------------------------------
# Responses


def message(content: list[dict[str, Any]], stop_reason: str = "end_turn", **usage: int) -> bytes:
    return json.dumps(
        {
            "id": "msg_01",
            "type": "message",
            "role": "assistant",
            "model": "claude-x",
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {"input_tokens": 377, "output_tokens": 65, **usage},
        }
    ).encode()


def test_parse_text_and_tool_use() -> None:
    body = message(
        [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "P"}},
        ],
        "tool_use",
        cache_creation_input_tokens=10,
        cache_read_input_tokens=20,
    )
    resp = codec.parse_chat(SPEC, body)
    assert (resp.id, resp.model, resp.object) == ("msg_01", "claude-x", "chat.completion")
    assert resp.created > 1_700_000_000
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Checking."
    [call] = choice.message.tool_calls
    assert (call.id, call.function.name) == ("toolu_01", "get_weather")
    assert json.loads(call.function.arguments) == {"city": "P"}
    assert resp.usage.model_dump(exclude_none=True) == {
        "prompt_tokens": 407,
        "completion_tokens": 65,
        "total_tokens": 472,
        "prompt_tokens_details": {"cached_tokens": 20, "cache_creation_tokens": 10},
    }


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("model_context_window_exceeded", "length"),
        ("pause_turn", "stop"),
        ("something_new", "stop"),
    ],
)
def test_stop_reasons(stop_reason: str, finish: str) -> None:
    body = message([{"type": "text", "text": "x"}], stop_reason)
    assert codec.parse_chat(SPEC, body).choices[0].finish_reason == finish


def test_parse_json_answer_thinking_and_no_cache_fields() -> None:
    body = message(
        [
            {"type": "thinking", "thinking": "Let me see.", "signature": "sig"},
            {"type": "tool_use", "id": "t", "name": "json_response__w", "input": {"city": "P"}},
        ],
        "tool_use",
    )
    resp = codec.parse_chat(SPEC, body)
    assert resp.choices[0].finish_reason == "stop"
    assert json.loads(resp.choices[0].message.content) == {"city": "P"}
    assert resp.choices[0].message.tool_calls is None
    assert resp.choices[0].message.model_dump()["reasoning"] == "Let me see."
    assert resp.usage.prompt_tokens_details is None
    empty = codec.parse_chat(SPEC, message([], "max_tokens"))
    assert empty.choices[0].message.content == ""


def test_parse_errors() -> None:
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    with pytest.raises(errors.ServerError) as info:
        codec.parse_chat(SPEC, json.dumps(error).encode())
    assert info.value.status_code == 529
    for garbage in (b"not json", b"[]", b'{"type": "message"}', message([{"type": "text"}])):
        with pytest.raises(errors.ProtocolError):
            codec.parse_chat(SPEC, garbage)


def error_body(kind: str, message: str = "m") -> bytes:
    body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_b"}
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    ("status", "kind", "cls", "retryable"),
    [
        (400, "invalid_request_error", errors.BadRequestError, False),
        (401, "authentication_error", errors.AuthenticationError, False),
        (403, "permission_error", errors.AuthenticationError, False),
        (404, "not_found_error", errors.NotFoundError, False),
        (413, "request_too_large", errors.BadRequestError, False),
        (429, "rate_limit_error", errors.RateLimitError, True),
        (500, "api_error", errors.ServerError, True),
        (529, "overloaded_error", errors.ServerError, True),
    ],
)
def test_map_error(status: int, kind: str, cls: type[Exception], retryable: bool) -> None:
    err = codec.map_error(SPEC, status, {}, error_body(kind, "what happened"))
    assert type(err) is cls
    assert (err.status_code, err.error_type, err.retryable) == (status, kind, retryable)
    assert err.message == f"HTTP {status}: what happened"
    assert err.request_id == "req_b"  # from the body when the header is absent


def test_map_error_headers_and_context_length() -> None:
    headers = {"retry-after": "7", "request-id": "req_h", "x-should-retry": "false"}
    err = codec.map_error(SPEC, 429, headers, error_body("rate_limit_error"))
    assert (err.retry_after, err.request_id, err.should_retry) == (7.0, "req_h", False)
    long = error_body("invalid_request_error", "prompt is too long: 200001 tokens > 200000 maximum")
    assert isinstance(codec.map_error(SPEC, 400, {}, long), errors.ContextLengthError)
    page = codec.map_error(SPEC, 413, {}, b"<html>413 Request Entity Too Large</html>")
    assert isinstance(page, errors.BadRequestError)


def test_parse_models() -> None:
    body = {
        "data": [
            {"id": "claude-a", "display_name": "A", "created_at": "2025-02-19T00:00:00Z"},
            {"id": "claude-b", "created_at": "garbage"},
        ],
        "has_more": False,
    }
    models = codec.parse_models(SPEC, json.dumps(body).encode())
    assert [(m.id, m.created, m.owned_by) for m in models.data] == [
        ("claude-a", 1739923200, "anthropic"),
        ("claude-b", 0, "anthropic"),
    ]
    assert models.data[0].model_dump()["display_name"] == "A"
    with pytest.raises(errors.ProtocolError):
        codec.parse_models(SPEC, b'{"data": [{"type": "model"}]}')
    with pytest.raises(errors.AuthenticationError):
        codec.parse_models(SPEC, error_body("authentication_error"))


# ---------------------------------------------------------------------------------------------
# Streams

EXAMPLE = b"""event: message_start
data: {"type":"message_start","message":{"id":"msg_01","type":"message","role":"assistant","model":"claude-x","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":377,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Checking."}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01","name":"get_weather","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\\"city\\": \\"Pa"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"ris\\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":65}}

event: message_stop
data: {"type":"message_stop"}

"""  # noqa: E501  (anthropic.md section 3, verbatim)


def decode(raw: bytes, step: int | None = None, decoder: Any = None) -> list[Any]:
    decoder = decoder or codec.ChunkDecoder(SPEC)
    step = step or len(raw)
    chunks = []
    for i in range(0, len(raw), step):
        for event in decoder.feed(raw[i : i + step]):
            chunk = decoder.parse(event)
            if chunk is not None:
                chunks.append(chunk)
    return chunks


def frame(data: dict[str, Any]) -> bytes:
    return f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode()


START = frame(
    {"type": "message_start", "message": {"id": "m", "model": "c", "usage": {"input_tokens": 2}}}
)


def test_the_protocol_example_stream() -> None:
    decoder = codec.ChunkDecoder(SPEC)
    whole = decode(EXAMPLE, decoder=decoder)
    assert decoder.done and decoder.finished
    decoder.check_end()
    deltas = [c.choices[0].delta.model_dump(exclude_none=True) for c in whole]
    assert deltas == [
        {"role": "assistant", "content": ""},
        {"content": "Checking."},
        {"tool_calls": [{"index": 0, "id": "toolu_01", "type": "function",
                         "function": {"name": "get_weather", "arguments": ""}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": "Pa'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": 'ris"}'}}]},
        {},
    ]  # fmt: skip
    assert [c.choices[0].finish_reason for c in whole][-1] == "tool_calls"
    assert whole[-1].usage.model_dump(exclude_none=True) == {
        "prompt_tokens": 377,
        "completion_tokens": 65,
        "total_tokens": 442,
    }
    assert {(c.id, c.model, c.object) for c in whole} == {
        ("msg_01", "claude-x", "chat.completion.chunk")
    }
    # Any split of the bytes gives the same chunks.
    for step in (1, 7, 64):
        split = decode(EXAMPLE, step)
        assert [c.choices[0].delta for c in split] == [c.choices[0].delta for c in whole]


def test_after_message_stop_nothing_more_is_parsed() -> None:
    decoder = codec.ChunkDecoder(SPEC)
    decode(EXAMPLE, decoder=decoder)
    assert decoder.parse(b'{"type":"content_block_delta","index":0,"delta":{}}') is None
    assert decoder.close() == []


def test_cut_streams() -> None:
    decoder = codec.ChunkDecoder(SPEC)
    decode(EXAMPLE.split(b"event: message_delta")[0], decoder=decoder)
    assert not decoder.finished
    with pytest.raises(errors.BackendConnectionError):
        decoder.check_end()
    finished = codec.ChunkDecoder(SPEC)
    decode(EXAMPLE.split(b"event: message_stop")[0], decoder=finished)
    assert finished.finished and not finished.done
    finished.check_end()  # whole answer, terminator lost: not an error


def test_tool_input_of_nothing_is_an_empty_object() -> None:
    events = [
        START,
        frame({"type": "content_block_start", "index": 0,
               "content_block": {"type": "tool_use", "id": "t", "name": "f", "input": {}}}),
        frame({"type": "content_block_delta", "index": 0,
               "delta": {"type": "input_json_delta", "partial_json": ""}}),
        frame({"type": "content_block_stop", "index": 0}),
    ]  # fmt: skip
    chunks = decode(b"".join(events))
    arguments = "".join(
        tc.function.arguments or ""
        for c in chunks
        for tc in c.choices[0].delta.tool_calls or []
        if tc.function
    )
    assert arguments == "{}"


def test_json_answer_tool_streams_as_content_and_thinking_as_reasoning() -> None:
    events = [
        START,
        frame({"type": "content_block_start", "index": 0,
               "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
        frame({"type": "content_block_delta", "index": 0,
               "delta": {"type": "thinking_delta", "thinking": "Hmm."}}),
        frame({"type": "content_block_delta", "index": 0,
               "delta": {"type": "signature_delta", "signature": "sig"}}),
        frame({"type": "content_block_start", "index": 1,
               "content_block": {"type": "tool_use", "id": "t", "name": "json_response__w",
                                 "input": {}}}),
        frame({"type": "content_block_delta", "index": 1,
               "delta": {"type": "input_json_delta", "partial_json": '{"a": 1}'}}),
        frame({"type": "message_delta", "delta": {"stop_reason": "tool_use"},
               "usage": {"output_tokens": 3}}),
        frame({"type": "some_future_event"}),
    ]  # fmt: skip
    chunks = decode(b"".join(events))
    assert chunks[1].choices[0].delta.model_dump()["reasoning"] == "Hmm."
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == '{"a": 1}'
    assert all(not c.choices[0].delta.tool_calls for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


@pytest.mark.parametrize(
    ("kind", "cls", "status"),
    [
        ("overloaded_error", errors.ServerError, 529),
        ("api_error", errors.ServerError, 500),
        ("rate_limit_error", errors.RateLimitError, 429),
        ("invalid_request_error", errors.BadRequestError, 400),
        ("authentication_error", errors.AuthenticationError, 401),
        ("not_found_error", errors.NotFoundError, 404),
        ("a_new_error", errors.ServerError, 500),
    ],
)
def test_error_events(kind: str, cls: type[Exception], status: int) -> None:
    decoder = codec.ChunkDecoder(SPEC)
    decode(START, decoder=decoder)
    [event] = decoder.feed(frame({"type": "error", "error": {"type": kind, "message": "bad"}}))
    with pytest.raises(cls) as info:
        decoder.parse(event)
    assert info.value.status_code == status
    assert info.value.error_type == kind
    assert info.value.backend == SPEC.name


@pytest.mark.parametrize(
    "event",
    [
        b"{not json",
        b"[1, 2]",
        b'{"no": "type"}',
        b'{"type": "content_block_delta", "delta": {"type": "text_delta", "text": "x"}}',
        b'{"type": "message_start", "message": {}}',
        b'{"type": "content_block_delta", "index": 9, '
        b'"delta": {"type": "input_json_delta", "partial_json": "x"}}',
    ],
)
def test_malformed_events_are_protocol_errors(event: bytes) -> None:
    decoder = codec.ChunkDecoder(SPEC)
    with pytest.raises(errors.ProtocolError):
        decoder.parse(event)


def test_ping_and_null_stop_reason_carry_nothing() -> None:
    decoder = codec.ChunkDecoder(SPEC)
    decode(START, decoder=decoder)
    assert decoder.parse(b'{"type": "ping"}') is None
    update = b'{"type": "message_delta", "delta": {"stop_reason": null}, "usage": {}}'
    assert decoder.parse(update) is None
    assert not decoder.finished

"""The TGI codec's pure functions: request translation, response and stream parsing, errors.

No sockets: ``llmrouter.backends.tgi`` builds requests and parses bytes. Protocol facts:
``shared/protocols/tgi.md``; round trips live in ``tests/_async/test_tgi.py``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from llmrouter._request import build_request
from llmrouter.backends import tgi
from llmrouter.config import BackendSpec, parse_backend
from llmrouter.errors import (
    BackendConnectionError,
    BadRequestError,
    ContextLengthError,
    InvalidRequestError,
    ProtocolError,
    RateLimitError,
    ServerError,
    StatusError,
)

SPEC = parse_backend("tgi://box:8080", {})
PINNED = parse_backend("tgi://box:8080?model=org/model", {})
MESSAGES = [{"role": "user", "content": "hi"}]
SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}}


def body_of(spec: BackendSpec = SPEC, served: str = "org/model", **kw: Any) -> dict[str, Any]:
    """The JSON body for a call with ``kw``; ``served`` is the model the driver resolved."""
    stream = kw.pop("stream", False)
    messages = kw.pop("messages", MESSAGES)
    http = tgi.build_chat(spec, build_request(messages, stream, kw), served)
    assert http.body is not None
    result: dict[str, Any] = json.loads(http.body)
    return result


def completion(**over: Any) -> bytes:
    message = over.pop("message", {"role": "assistant", "content": "Hi!"})
    body = {
        "object": "chat.completion",
        "id": "",
        "created": 1760000000,
        "model": "org/model",
        "system_fingerprint": "3.3.6-dev0-native",
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": over.pop("finish_reason", "stop"),
            }
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
    }
    body.update(over)
    return json.dumps(body).encode()


def sse_chunk(delta: dict[str, Any], finish: str | None = None, **over: Any) -> bytes:
    body = {
        "object": "chat.completion.chunk",
        "id": "",
        "created": 1760000000,
        "model": "org/model",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        **over,
    }
    return b"data:" + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


# -- build_chat ------------------------------------------------------------------------------


def test_request_line_headers_and_model() -> None:
    http = tgi.build_chat(SPEC, build_request(MESSAGES, True, {}), "org/model")
    assert (http.method, http.url) == ("POST", "http://box:8080/v1/chat/completions")
    assert http.headers["Accept"] == "text/event-stream"
    assert "Authorization" not in http.headers
    assert json.loads(http.body or b"")["model"] == "tgi"
    keyed = parse_backend("tgi://box", {"HF_TOKEN": "hf_x"})
    assert tgi.build_chat(keyed, build_request(MESSAGES, False, {}), "m").headers[
        "Authorization"
    ] == ("Bearer hf_x")


def test_model_is_tgi_unless_the_call_names_one_without_a_pin() -> None:
    assert body_of(SPEC, "org/model")["model"] == "tgi"  # discovered
    assert body_of(PINNED, "org/model")["model"] == "tgi"  # pinned
    assert body_of(PINNED, "org/model", model="lora")["model"] == "tgi"  # the pin wins
    assert body_of(SPEC, "lora", model="lora")["model"] == "lora"  # a LoRA adapter
    assert body_of(SPEC, "m", extra_body={"model": "x"})["model"] == "x"


TOOL_F = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"stop": "END"}, {"stop": ["END"]}),
        ({"stop": ["a", "b"]}, {"stop": ["a", "b"]}),
        ({"top_p": 1.0}, {}),
        ({"top_p": 1}, {}),
        ({"top_p": 0.0, "temperature": 0.8}, {"temperature": 0}),
        ({"top_p": 0.5}, {"top_p": 0.5}),
        ({"temperature": 0.0}, {"temperature": 0.0}),
        ({"max_completion_tokens": 7}, {"max_tokens": 7}),
        ({"max_tokens": 9, "max_completion_tokens": 7}, {"max_tokens": 7}),
        ({"n": 1}, {}),
        ({"logit_bias": {}}, {}),
        ({"presence_penalty": 0.0}, {}),
        ({"frequency_penalty": 0.5, "seed": 3}, {"frequency_penalty": 0.5, "seed": 3}),
        ({"logprobs": True, "top_logprobs": 2}, {"logprobs": True, "top_logprobs": 2}),
        ({"response_format": {"type": "text"}}, {}),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"schema": SCHEMA}}},
            {"response_format": {"type": "json", "value": SCHEMA}},
        ),
        (
            {"response_format": {"type": "json_object", "schema": SCHEMA}},
            {"response_format": {"type": "json", "value": SCHEMA}},
        ),
        (
            {"response_format": {"type": "json_object", "value": SCHEMA}},
            {"response_format": {"type": "json", "value": SCHEMA}},
        ),
        (
            {"tools": TOOL_F, "tool_choice": "required"},
            {"tools": TOOL_F, "tool_choice": "required"},
        ),
        ({"stream_options": {"include_usage": True}}, {"stream_options": {"include_usage": True}}),
    ],
)
def test_parameters_are_translated(params: dict[str, Any], expected: dict[str, Any]) -> None:
    body = body_of(**params)
    body.pop("model"), body.pop("messages")
    assert body == expected


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"n": 2}, "n"),
        ({"logit_bias": {"1": 5}}, "logit_bias"),
        ({"presence_penalty": -1.0}, "presence_penalty"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, None),
        (
            {
                "response_format": {"type": "json_object", "schema": SCHEMA},
                "tools": [{"type": "function", "function": {"name": "f"}}],
            },
            "response_format",
        ),
        ({"audio": {"voice": "alloy"}}, "audio"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"modalities": ["text", "audio"]}, "modalities"),
    ],
)
def test_what_tgi_cannot_do_raises_invalid_request(
    params: dict[str, Any], param: str | None
) -> None:
    with pytest.raises(InvalidRequestError, match=r"^tgi: ") as info:
        body_of(**params)
    assert info.value.param == (param or "response_format")


def test_text_response_format_with_tools_is_fine_and_modalities_text_is_dropped() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": SCHEMA}}]
    body = body_of(response_format={"type": "text"}, tools=tools, modalities=["text"])
    assert "response_format" not in body and "modalities" not in body
    assert body["tools"] == tools


def test_messages_are_adapted_and_the_request_is_left_alone() -> None:
    messages = [
        {"role": "developer", "content": "Be brief."},
        {"role": "assistant", "content": None},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        ]},
        {"role": "tool", "tool_call_id": "c1", "content": "ok"},
    ]  # fmt: skip
    request = build_request(messages, False, {"stop": "x", "top_p": 1.0})
    http = tgi.build_chat(SPEC, request, "m")
    sent = json.loads(http.body or b"")["messages"]
    assert [m["role"] for m in sent] == ["system", "assistant", "assistant", "tool"]
    assert sent[1]["content"] == "" and sent[2]["content"] is None
    assert request.messages[0]["role"] == "developer" and request.messages[1]["content"] is None
    assert request.params == {"stop": "x", "top_p": 1.0}


# -- parse_chat ------------------------------------------------------------------------------


def test_parse_chat_fills_the_id_and_maps_stop_sequence() -> None:
    resp = tgi.parse_chat(SPEC, completion(finish_reason="stop_sequence"))
    assert resp.id.startswith("chatcmpl-") and len(resp.id) == len("chatcmpl-") + 24
    assert resp.choices[0].finish_reason == "stop"
    assert resp.model == "org/model"
    assert resp.model_dump(exclude_unset=True)["system_fingerprint"] == "3.3.6-dev0-native"
    assert tgi.parse_chat(SPEC, completion(finish_reason="eos_token")).choices[0].finish_reason == (
        "stop"
    )
    assert tgi.parse_chat(SPEC, completion(finish_reason="length")).choices[0].finish_reason == (
        "length"
    )
    assert tgi.parse_chat(SPEC, completion(id="chatcmpl-x")).id == "chatcmpl-x"


def test_parse_chat_labels_a_tgi_echo_with_the_pinned_model() -> None:
    assert tgi.parse_chat(PINNED, completion(model="tgi")).model == "org/model"
    assert tgi.parse_chat(SPEC, completion(model="tgi")).model == "tgi"  # not known here


def test_parse_chat_tool_calls() -> None:
    call = {
        "id": "",
        "type": "function",
        "function": {"description": None, "name": "f", "arguments": {"city": "Paris"}},
    }  # older TGI: arguments as a JSON object
    resp = tgi.parse_chat(
        SPEC,
        completion(message={"role": "assistant", "tool_calls": [call]}, object="text_completion"),
    )
    assert resp.object == "chat.completion"
    (out,) = resp.choices[0].message.tool_calls or []
    assert out.id.startswith("call_")
    assert json.loads(out.function.arguments) == {"city": "Paris"}
    assert resp.choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize(
    ("body", "cls", "status"),
    [
        ({"error": "Model is overloaded", "error_type": "overloaded"}, RateLimitError, 429),
        ({"error": "Request failed during generation: x", "error_type": "generation"}, ServerError,
         424),
        ({"error": {"message": "Input validation error: bad", "http_status_code": 422}},
         BadRequestError, 422),
    ],
)  # fmt: skip
def test_parse_chat_error_objects_in_a_200(
    body: dict[str, Any], cls: type[StatusError], status: int
) -> None:
    with pytest.raises(StatusError) as info:
        tgi.parse_chat(SPEC, json.dumps(body).encode())
    assert type(info.value) is cls and info.value.status_code == status


@pytest.mark.parametrize("raw", [b"not json", b"[]", b'{"id": "", "choices": 3}'])
def test_parse_chat_garbage_is_a_protocol_error(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        tgi.parse_chat(SPEC, raw)


# -- ChunkDecoder ----------------------------------------------------------------------------


def decode(decoder: tgi.ChunkDecoder, data: bytes) -> list[Any]:
    return [decoder.parse(e) for e in decoder.feed(data)]


def test_stream_decoding() -> None:
    decoder = tgi.ChunkDecoder(SPEC)
    wire = (
        b":\n\n"
        + sse_chunk({"role": "assistant", "content": "Hi"})
        + b":\n\n"
        + sse_chunk({"role": "assistant", "content": "!"}, "stop_sequence")
        + sse_chunk({}, None, choices=[], usage={"prompt_tokens": 1})
        + b"data:[DONE]\n\n"
    )
    chunks = decode(decoder, wire[:7]) + decode(decoder, wire[7:])
    assert chunks[-1] is None and decoder.done
    first, second, usage = chunks[:3]
    assert first.id == second.id == usage.id and first.id.startswith("chatcmpl-")
    assert (first.choices[0].delta.content, second.choices[0].delta.content) == ("Hi", "!")
    assert second.choices[0].finish_reason == "stop"
    assert usage.choices == [] and usage.usage.prompt_tokens == 1
    assert decoder.parse(b"{}") is None  # anything after [DONE]


def test_stream_tool_calls() -> None:
    decoder = tgi.ChunkDecoder(PINNED)
    frag = {"index": 0, "id": "", "type": "function", "function": {"name": "f", "arguments": "{"}}
    later = {**frag, "function": {"name": None, "arguments": "}"}}
    wire = sse_chunk({"role": "assistant", "tool_calls": [frag]}, model="tgi") + sse_chunk(
        {"role": "assistant", "tool_calls": later}, "stop", object="text_completion"
    )  # the second in an older TGI's shape: one object, not a list
    a, b = decode(decoder, wire)
    assert a.model == "org/model"
    assert a.choices[0].delta.tool_calls[0].id.startswith("call_")
    assert b.choices[0].delta.tool_calls[0].id is None
    assert b.choices[0].finish_reason == "tool_calls"
    assert decoder.finished and not decoder.done


@pytest.mark.parametrize(
    ("event", "cls", "status"),
    [
        ({"error": {"message": "Request failed during generation: OOM", "http_status_code": 422}},
         ServerError, 424),
        ({"error": {"message": "Model is overloaded", "http_status_code": 422}},
         RateLimitError, 429),
        ({"error": {"message": "Incomplete generation", "http_status_code": 422}},
         ServerError, 500),
        ({"error": {"message": "Input validation error: `inputs` must have less than 8 tokens. "
                    "Given: 9", "http_status_code": 422}}, ContextLengthError, 422),
        ({"error": {"message": "Template error: x", "http_status_code": 422}},
         BadRequestError, 422),
        ({"error": "Incomplete generation stream", "error_type": "incomplete_generation_stream"},
         ServerError, 500),
        ({"error": "Model is overloaded", "error_type": "overloaded"}, RateLimitError, 429),
        ({"error": "Tool error: x", "error_type": "tool_error"}, BadRequestError, 422),
        ({"error": {"message": "proxy failed", "code": 503}}, ServerError, 503),
        ({"error": {"message": "unknown"}}, ServerError, 500),
    ],
)  # fmt: skip
def test_stream_error_events(event: dict[str, Any], cls: type[StatusError], status: int) -> None:
    decoder = tgi.ChunkDecoder(SPEC)
    (raw,) = decoder.feed(b"data:" + json.dumps(event).encode() + b"\n\n")
    with pytest.raises(StatusError) as info:
        decoder.parse(raw)
    assert type(info.value) is cls and info.value.status_code == status


def test_stream_malformed_and_cut() -> None:
    decoder = tgi.ChunkDecoder(SPEC)
    with pytest.raises(ProtocolError):
        decoder.parse(b"{not json")
    with pytest.raises(ProtocolError):
        decoder.parse(b'{"id": ""}')
    decode(decoder, sse_chunk({"content": "Hi"}))
    assert decoder.close() == []
    with pytest.raises(BackendConnectionError):
        decoder.check_end()


# -- map_error -------------------------------------------------------------------------------


def tgi_body(message: str, error_type: str) -> bytes:
    return json.dumps({"error": message, "error_type": error_type}).encode()


@pytest.mark.parametrize(
    ("status", "body", "cls"),
    [
        (422, tgi_body("Input validation error: `top_p` must be > 0.0 and < 1.0", "validation"),
         BadRequestError),
        (422, tgi_body("Input validation error: `inputs` must have less than 4 tokens. Given: 9",
                       "validation"), ContextLengthError),
        (422, tgi_body("Input validation error: `inputs` tokens + `max_new_tokens` must be <= 8. "
                       "Given: 4 `inputs` tokens and 9 `max_new_tokens`", "validation"),
         ContextLengthError),
        (422, tgi_body("Input validation error: `max_new_tokens` must be <= 4. Given: 9",
                       "validation"), ContextLengthError),
        (422, tgi_body("Tool error: Grammar and tools are mutually exclusive", "tool_error"),
         BadRequestError),
        (424, tgi_body("Request failed during generation: OOM", "generation"), ServerError),
        (429, tgi_body("Model is overloaded", "overloaded"), RateLimitError),
        (500, tgi_body("Incomplete generation", "incomplete_generation"), ServerError),
        (503, tgi_body("unhealthy", "healthcheck"), ServerError),
        (400, b"Failed to parse the request body as JSON: EOF", BadRequestError),
        (415, b"Expected request with `Content-Type: application/json`", BadRequestError),
        (422, b"Failed to deserialize the JSON body into the target type: stop", BadRequestError),
    ],
)  # fmt: skip
def test_map_error(status: int, body: bytes, cls: type[StatusError]) -> None:
    error = tgi.map_error(SPEC, status, {"retry-after": "3"}, body)
    assert type(error) is cls
    assert error.status_code == status and error.backend == SPEC.name
    assert error.retry_after == 3.0
    assert str(error).count(f"HTTP {status}:") == 1
    assert error.retryable is isinstance(error, ServerError | RateLimitError)


def test_map_error_keeps_an_explicit_should_retry() -> None:
    error = tgi.map_error(SPEC, 424, {"x-should-retry": "false"}, tgi_body("x", "generation"))
    assert isinstance(error, ServerError) and error.retryable is False


# -- discovery, health, capabilities ---------------------------------------------------------


def test_models_come_from_info() -> None:
    http = tgi.build_models(SPEC)
    assert (http.method, http.url) == ("GET", "http://box:8080/info")
    info = {"model_id": "org/model", "max_input_tokens": 4095, "max_total_tokens": 4096}
    models = tgi.parse_models(SPEC, json.dumps({**info, "router": "r"}).encode())
    (model,) = models.data
    assert model.id == "org/model" and model.owned_by == "r"
    dumped = model.model_dump()
    assert (dumped["max_model_len"], dumped["max_input_tokens"]) == (4096, 4095)
    with pytest.raises(ProtocolError):
        tgi.parse_models(SPEC, b'{"object": "list", "data": []}')


def test_health_route_and_capabilities() -> None:
    assert tgi.build_health(SPEC).url == "http://box:8080/health"
    assert tgi.build_health(parse_backend("tgi+https://h:443", {})).url == "https://h:443/health"
    caps = tgi.CAPABILITIES
    assert (caps.tools, caps.json_schema, caps.json_object, caps.n, caps.logprobs) == (
        True,
        True,
        False,
        False,
        True,
    )

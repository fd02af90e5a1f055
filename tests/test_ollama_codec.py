"""Unit tests of the Ollama codec's pure functions (``llmrouter/backends/ollama.py``).

No sockets: requests are built and bytes parsed directly. Wire facts:
``shared/protocols/ollama.md``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from llmrouter._request import build_request
from llmrouter.backends import ollama
from llmrouter.config import BackendSpec, parse_backend
from llmrouter.errors import (
    BackendConnectionError,
    BadRequestError,
    InvalidRequestError,
    NotFoundError,
    ProtocolError,
    ServerError,
    StatusError,
)

SPEC = parse_backend("ollama://127.0.0.1:11434?model=llama3.2", env={})
HI = [{"role": "user", "content": "hi"}]
LINE = {"model": "llama3.2", "created_at": "2026-01-01T00:00:00.123456789Z"}


def body_of(messages: Any = None, stream: bool = False, spec: BackendSpec = SPEC, **kw: Any) -> Any:
    request = build_request(HI if messages is None else messages, stream, kw)
    http = ollama.build_chat(spec, request, "llama3.2")
    return json.loads(http.body or b"")


def line(**fields: Any) -> bytes:
    return json.dumps({**LINE, **fields}).encode() + b"\n"


def msg(content: str = "", **fields: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": content, **fields}


# -- requests ---------------------------------------------------------------------------------


def test_spec_has_no_v1_and_the_request_goes_to_api_chat() -> None:
    request = build_request(HI, False, {})
    http = ollama.build_chat(SPEC, request, "llama3.2")
    assert http.method == "POST"
    assert http.url == "http://127.0.0.1:11434/api/chat"
    assert http.headers["Accept"] == "application/json"
    assert http.headers["Content-Type"] == "application/json"
    assert "Authorization" not in http.headers
    assert json.loads(http.body or b"") == {"model": "llama3.2", "messages": HI, "stream": False}


def test_stream_is_always_explicit() -> None:
    assert body_of(stream=True)["stream"] is True
    assert body_of(stream=False)["stream"] is False
    # extra_body cannot turn it around: the driver parses by request.stream.
    assert body_of(stream=False, extra_body={"stream": True})["stream"] is False


def test_key_is_sent_as_bearer_only_when_configured() -> None:
    spec = parse_backend("ollama://h?api_key_env=K", env={"K": "sekrit"})
    request = build_request(HI, True, {"extra_headers": {"X-Trace": "1"}})
    http = ollama.build_chat(spec, request, "m")
    assert http.headers["Authorization"] == "Bearer sekrit"
    assert http.headers["X-Trace"] == "1"
    assert http.headers["Accept"] == "application/x-ndjson"
    assert "sekrit" not in repr(spec)


def test_sampling_fields_map_into_options() -> None:
    options = ollama.build_options(
        {
            "temperature": 0.0,
            "top_p": 0.9,
            "seed": 3,
            "max_tokens": 10,
            "stop": "END",
            "frequency_penalty": 0.5,
            "presence_penalty": -0.5,
        }
    )
    assert options == {
        "temperature": 0.0,
        "top_p": 0.9,
        "seed": 3,
        "num_predict": 10,
        "stop": ["END"],
        "frequency_penalty": 0.5,
        "presence_penalty": -0.5,
    }
    assert ollama.build_options({"max_tokens": 10, "max_completion_tokens": 20}) == {
        "num_predict": 20
    }
    assert ollama.build_options({"stop": ["a", "b"]}) == {"stop": ["a", "b"]}
    assert ollama.build_options({}) == {}
    assert "options" not in body_of()


def test_extra_body_options_merge_and_top_level_fields_pass_through() -> None:
    body = body_of(
        max_tokens=5,
        temperature=0.3,
        extra_body={
            "options": {"num_ctx": 8192, "temperature": 0.1},
            "keep_alive": -1,
            "think": "low",
        },
    )
    assert body["options"] == {"num_predict": 5, "temperature": 0.1, "num_ctx": 8192}
    assert body["keep_alive"] == -1
    assert body["think"] == "low"
    with pytest.raises(InvalidRequestError, match="options"):
        body_of(extra_body={"options": [1]})


def test_response_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    assert body_of(response_format={"type": "json_object"})["format"] == "json"
    as_schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    assert body_of(response_format=as_schema)["format"] == schema
    no_schema = {"type": "json_schema", "json_schema": {"name": "x"}}
    assert body_of(response_format=no_schema)["format"] == "json"
    assert "format" not in body_of(response_format={"type": "text"})


def test_tools_pass_as_openai_shaped_and_tool_choice_none_drops_them() -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    assert body_of(tools=[tool])["tools"] == [tool]
    assert body_of(tools=[tool], tool_choice="auto")["tools"] == [tool]
    assert "tools" not in body_of(tools=[tool], tool_choice="none")
    for choice in ("required", {"type": "function", "function": {"name": "f"}}):
        with pytest.raises(InvalidRequestError, match="tool_choice"):
            body_of(tools=[tool], tool_choice=choice)


@pytest.mark.parametrize(
    ("kw", "param"),
    [
        ({"n": 2}, "n"),
        ({"logit_bias": {"1": 5}}, "logit_bias"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"reasoning_effort": "extreme"}, "reasoning_effort"),
        ({"prediction": {"type": "content", "content": "x"}}, "prediction"),
    ],
)
def test_what_ollama_cannot_do_is_refused(kw: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        body_of(**kw)
    assert info.value.param == param


def test_harmless_fields_are_accepted() -> None:
    body = body_of(
        n=1, user="u", metadata={"a": "b"}, modalities=["text"], parallel_tool_calls=False
    )
    assert set(body) == {"model", "messages", "stream"}


def test_reasoning_effort_and_logprobs() -> None:
    assert body_of(reasoning_effort="none")["think"] is False
    assert body_of(reasoning_effort="high")["think"] == "high"
    body = body_of(logprobs=True, top_logprobs=3)
    assert (body["logprobs"], body["top_logprobs"]) == (True, 3)


def test_messages_are_translated() -> None:
    png = "aGVsbG8="
    messages = [
        {"role": "developer", "content": "rules"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}},
                {"type": "text", "text": "here"},
            ],
            "name": "bob",
        },
        {
            "role": "assistant",
            "content": None,
            "reasoning_content": "hmm",
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "f", "arguments": '{"x": 1}'},
                },
                {"id": "call_b", "type": "function", "function": {"name": "g", "arguments": ""}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_b", "content": "B"},
        {"role": "tool", "tool_call_id": "call_a", "content": [{"type": "text", "text": "A"}]},
    ]
    assert ollama.translate_messages(messages) == [
        {"role": "system", "content": "rules"},
        {"role": "user", "content": "look\nhere", "images": [png]},
        {
            "role": "assistant",
            "content": "",
            "thinking": "hmm",
            "tool_calls": [
                {"function": {"index": 0, "name": "f", "arguments": {"x": 1}}, "id": "call_a"},
                {"function": {"index": 1, "name": "g", "arguments": {}}, "id": "call_b"},
            ],
        },
        {"role": "tool", "content": "B", "tool_call_id": "call_b", "tool_name": "g"},
        {"role": "tool", "content": "A", "tool_call_id": "call_a", "tool_name": "f"},
    ]


@pytest.mark.parametrize(
    ("message", "match"),
    [
        (
            {
                "role": "assistant",
                "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{"}}],
            },
            "not valid JSON",
        ),
        (
            {
                "role": "assistant",
                "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "[1]"}}],
            },
            "JSON object",
        ),
        (
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": "http://x/a.png"}}],
            },
            "data: URI",
        ),
        (
            {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "x"}}]},
            "input_audio",
        ),
    ],
)
def test_untranslatable_messages_are_refused(message: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidRequestError, match=match):
        ollama.translate_messages([message])


def test_models_and_health_requests() -> None:
    models = ollama.build_models(SPEC)
    assert (models.method, models.url) == ("GET", "http://127.0.0.1:11434/api/tags")
    health = ollama.build_health(SPEC)
    assert (health.method, health.url) == ("GET", "http://127.0.0.1:11434/")


def test_capabilities_are_declared() -> None:
    caps = ollama.CAPABILITIES
    assert caps.tools and caps.json_schema and caps.json_object and caps.stream_usage
    assert not caps.n and not caps.tool_choice


# -- responses --------------------------------------------------------------------------------


def test_parse_chat() -> None:
    raw = line(
        message=msg("Hello!"),
        done=True,
        done_reason="stop",
        total_duration=5,
        prompt_eval_count=26,
        eval_count=3,
    )
    resp = ollama.parse_chat(SPEC, raw)
    assert resp.id.startswith("chatcmpl-")
    assert resp.object == "chat.completion"
    assert resp.created == 1767225600
    assert resp.model == "llama3.2"
    assert resp.choices[0].message.content == "Hello!"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens, resp.usage.total_tokens) == (
        26,
        3,
        29,
    )
    # Metric fields are omitempty: absent counts are zero.
    bare = ollama.parse_chat(SPEC, line(message=msg("x"), done=True, done_reason="length"))
    assert bare.choices[0].finish_reason == "length"
    assert bare.usage is not None and bare.usage.total_tokens == 0


def test_parse_chat_tool_calls_get_stable_ids() -> None:
    calls = [
        {"function": {"name": "f", "arguments": {"city": "Paris", "n": 2}}},
        {"function": {"index": 1, "name": "g", "arguments": {}}},
        {"id": "call_given", "function": {"name": "h", "arguments": {"a": None}}},
    ]
    raw = line(message=msg("", tool_calls=calls), done=True, done_reason="stop")
    first = ollama.parse_chat(SPEC, raw)
    again = ollama.parse_chat(SPEC, raw)
    message = first.choices[0].message
    assert first.choices[0].finish_reason == "tool_calls"
    assert message.content is None
    assert message.tool_calls is not None
    assert [c.function.name for c in message.tool_calls] == ["f", "g", "h"]
    assert json.loads(message.tool_calls[0].function.arguments) == {"city": "Paris", "n": 2}
    assert message.tool_calls[1].function.arguments == "{}"
    ids = [c.id for c in message.tool_calls]
    assert ids == [c.id for c in (again.choices[0].message.tool_calls or [])]
    assert ids[0] == ollama.tool_call_id(0, "f", {"n": 2, "city": "Paris"})  # key order aside
    assert ids[0].startswith("call_0_") and ids[1].startswith("call_1_")
    assert ids[2] == "call_given"
    assert len(set(ids)) == 3
    assert ollama.tool_call_id(0, "f", {"x": 1}) != ollama.tool_call_id(0, "f", {"x": 2})
    assert ollama.tool_call_id(0, "f", {"x": 1}) != ollama.tool_call_id(1, "f", {"x": 1})


def test_parse_chat_thinking_and_logprobs() -> None:
    logprobs = [{"token": "Hi", "logprob": -0.1, "top_logprobs": []}]
    raw = line(message=msg("Hi", thinking="hmm"), done=True, logprobs=logprobs)
    resp = ollama.parse_chat(SPEC, raw)
    assert resp.choices[0].message.model_dump()["reasoning"] == "hmm"
    assert resp.choices[0].logprobs is not None
    assert resp.choices[0].logprobs.content == logprobs


@pytest.mark.parametrize(
    ("created_at", "expected"),
    [
        ("2026-01-01T00:00:00Z", 1767225600),
        ("2026-01-01T01:00:00.5+01:00", 1767225600),
        ("2024-07-22T20:20:46.856170123-07:00", 1721704846),
    ],
)
def test_created_from_rfc3339(created_at: str, expected: int) -> None:
    raw = json.dumps({"model": "m", "created_at": created_at, "message": msg("x"), "done": True})
    assert ollama.parse_chat(SPEC, raw.encode()).created == expected


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"not json", ProtocolError),
        (b"[1, 2]", ProtocolError),
        (line(message="text", done=True), ProtocolError),
        (line(message={"role": "assistant", "content": 5}, done=True), ProtocolError),
        (line(message=msg(tool_calls=[{"function": {"arguments": {}}}]), done=True), ProtocolError),
        (b'{"error": "model \'x\' not found"}', NotFoundError),
        (b'{"error": "something broke"}', ServerError),
    ],
)
def test_parse_chat_refuses_garbage_and_raises_error_objects(
    raw: bytes, error: type[Exception]
) -> None:
    with pytest.raises(error):
        ollama.parse_chat(SPEC, raw)


def test_parse_models() -> None:
    body = {
        "models": [
            {
                "name": "llama3.2:latest",
                "model": "llama3.2:latest",
                "modified_at": "2026-01-01T00:00:00Z",
            },
            {"name": "hf.co/bartowski/Qwen:Q4_K_M", "modified_at": "bad"},
            {"model": "jmorgan/tiny:1b"},
        ]
    }
    models = ollama.parse_models(SPEC, json.dumps(body).encode())
    assert [(m.id, m.owned_by) for m in models.data] == [
        ("llama3.2:latest", "library"),
        ("hf.co/bartowski/Qwen:Q4_K_M", "bartowski"),
        ("jmorgan/tiny:1b", "jmorgan"),
    ]
    assert models.data[0].created == 1767225600
    with pytest.raises(ProtocolError):
        ollama.parse_models(SPEC, b'{"data": []}')


# -- errors -----------------------------------------------------------------------------------


def test_map_error_model_not_found_says_ollama_pull() -> None:
    error = ollama.map_error(SPEC, 404, {}, b'{"error": "model \'llama3.3\' not found"}')
    assert isinstance(error, NotFoundError)
    assert "ollama pull llama3.3" in str(error)
    assert str(error).count("HTTP 404") == 1
    assert error.status_code == 404
    assert error.body == {"error": "model 'llama3.3' not found"}
    sched = ollama.map_error(
        SPEC, 404, {}, b'{"error": "model \\"qwen3\\" not found, try pulling it first"}'
    )
    assert "ollama pull qwen3" in str(sched)
    wrong_path = ollama.map_error(SPEC, 404, {}, b"404 page not found")
    assert isinstance(wrong_path, NotFoundError) and "ollama pull" not in str(wrong_path)


@pytest.mark.parametrize(
    ("status", "message", "error"),
    [
        (400, "model is required", BadRequestError),
        (400, '"llama3.2" does not support tools', BadRequestError),
        (500, 'option "num_ctx" must be of type integer', BadRequestError),
        (500, "llama runner process has terminated: exit status 2", ServerError),
        (503, "server busy, please try again.  maximum pending requests exceeded", ServerError),
        (499, "request canceled", StatusError),
    ],
)
def test_map_error_statuses(status: int, message: str, error: type[StatusError]) -> None:
    mapped = ollama.map_error(SPEC, status, {}, json.dumps({"error": message}).encode())
    assert type(mapped) is error
    assert mapped.status_code == status
    assert message in str(mapped)


# -- streams ----------------------------------------------------------------------------------


def test_decoder_frames_lines_across_any_split() -> None:
    lines = [
        line(message=msg("Hel"), done=False),
        line(message=msg("lo"), done=False),
        line(message=msg(), done=True, done_reason="stop", prompt_eval_count=2, eval_count=2),
    ]
    wire = b"".join(lines)
    for size in (1, 7, len(wire)):
        decoder = ollama.ChunkDecoder(SPEC)
        events: list[bytes] = []
        for i in range(0, len(wire), size):
            events += decoder.feed(wire[i : i + size])
        events += decoder.close()
        chunks = [c for c in map(decoder.parse, events) if c is not None]
        assert [c.choices[0].delta.content for c in chunks] == ["Hel", "lo", None]
        assert chunks[0].choices[0].delta.role == "assistant"
        assert chunks[-1].choices[0].finish_reason == "stop"
        assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 4
        assert decoder.done and decoder.finished
        decoder.check_end()


def test_decoder_first_chunk_has_role_and_empty_lines_are_skipped() -> None:
    decoder = ollama.ChunkDecoder(SPEC)
    first = decoder.parse(line(message=msg(), done=False))
    assert first is not None
    assert first.choices[0].delta.role == "assistant" and first.choices[0].delta.content == ""
    assert decoder.parse(line(message=msg(), done=False)) is None
    assert decoder.feed(b"\n\r\n") == []
    last = decoder.parse(line(message=msg(), done=True, done_reason="stop"))
    assert last is not None and last.choices[0].finish_reason == "stop"
    assert decoder.parse(line(message=msg("late"), done=False)) is None  # after done


def test_decoder_streams_tool_calls_with_running_indexes() -> None:
    call = {"function": {"name": "f", "arguments": {"x": 1}}}
    decoder = ollama.ChunkDecoder(SPEC)
    one = decoder.parse(line(message=msg(tool_calls=[call]), done=False))
    two = decoder.parse(line(message=msg(tool_calls=[call]), done=False))
    end = decoder.parse(line(message=msg(), done=True, done_reason="stop"))
    assert one is not None and two is not None and end is not None
    deltas = [*(one.choices[0].delta.tool_calls or []), *(two.choices[0].delta.tool_calls or [])]
    assert [d.index for d in deltas] == [0, 1]
    assert deltas[0].id == ollama.tool_call_id(0, "f", {"x": 1})
    assert deltas[0].function is not None and deltas[0].function.arguments == '{"x": 1}'
    assert end.choices[0].finish_reason == "tool_calls"


def test_decoder_thinking_becomes_reasoning() -> None:
    decoder = ollama.ChunkDecoder(SPEC)
    chunk = decoder.parse(line(message=msg(thinking="hmm"), done=False))
    assert chunk is not None and chunk.choices[0].delta.model_dump()["reasoning"] == "hmm"


def test_decoder_error_line_raises_the_typed_error() -> None:
    decoder = ollama.ChunkDecoder(SPEC)
    assert decoder.parse(line(message=msg("Hi"), done=False)) is not None
    with pytest.raises(ServerError, match="runner crashed"):
        decoder.parse(b'{"error": "runner crashed"}')
    with pytest.raises(ProtocolError):
        decoder.parse(b'{"model": "m", "message": {"content": ')


def test_decoder_body_ending_before_done_is_a_connection_error() -> None:
    decoder = ollama.ChunkDecoder(SPEC)
    events = decoder.feed(line(message=msg("Hi"), done=False) + b'{"model": "m", "mess')
    assert len(events) == 1
    assert decoder.close() == []  # a cut line is dropped, not mis-parsed
    decoder.parse(events[0])
    assert not decoder.finished
    with pytest.raises(BackendConnectionError, match="done"):
        decoder.check_end()


def test_decoder_close_returns_a_whole_last_line_without_newline() -> None:
    decoder = ollama.ChunkDecoder(SPEC)
    final = line(message=msg(), done=True, done_reason="stop")[:-1]
    assert decoder.feed(final) == []
    assert decoder.close() == [final]

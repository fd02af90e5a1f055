"""The SageMaker codec (``llmrouter/backends/sagemaker.py``), pure: requests, signatures,
errors, answers and streams, without a server. Protocol: ``shared/protocols/sagemaker.md``."""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmrouter._request import build_request
from llmrouter.backends import sagemaker, sigv4
from llmrouter.backends._eventstream import encode_message
from llmrouter.config import BackendSpec
from llmrouter.errors import (
    AuthenticationError,
    BackendConnectionError,
    BackendTimeoutError,
    BadRequestError,
    ConfigError,
    ContextLengthError,
    InvalidRequestError,
    MissingDependencyError,
    NotFoundError,
    ProtocolError,
    RateLimitError,
    ServerError,
)
from tests.fakes.openai_fake import Recorded
from tests.fakes.sagemaker_fake import (
    ACCESS_KEY,
    SECRET_KEY,
    StreamFailure,
    failure_frame,
    jsonlines_chat,
    payload_part,
    sse_chat,
    token_events,
    verify_sigv4,
)

HI = [{"role": "user", "content": "Hi"}]


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[None]:
    for name in (
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_SAGEMAKER",
        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME",
        "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    ):
        monkeypatch.delenv(name, raising=False)  # fmt: skip
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    sagemaker.reset_credentials()
    yield
    sagemaker.reset_credentials()


def spec(endpoint: str = "ep-1", model: str | None = "ep-1", **options: str) -> BackendSpec:
    opts = {"region": "eu-west-1", **options}
    return BackendSpec(
        kind="sagemaker",
        scheme="sagemaker",
        name=f"sagemaker://{endpoint}",
        location=endpoint,
        model=model,
        options=tuple(sorted((k, v) for k, v in opts.items() if v)),
    )


def request(stream: bool = False, messages: Any = HI, **kw: Any) -> Any:
    return build_request(messages, stream, kw)


def recorded(http: Any) -> Recorded:
    path = http.url.split("://", 1)[1]
    host, _, rest = path.partition("/")
    headers = {k.lower(): v for k, v in http.headers.items()}
    headers["host"] = host
    return Recorded(http.method, "/" + rest, headers, http.body)


# ---------------------------------------------------------------------------------------------
# Requests


def test_build_chat_signs_invoke_endpoint() -> None:
    http = sagemaker.build_chat(spec(), request(max_tokens=5), "ep-1")
    assert http.method == "POST"
    assert (
        http.url == "https://runtime.sagemaker.eu-west-1.amazonaws.com/endpoints/ep-1/invocations"
    )
    assert json.loads(http.body) == {"messages": HI, "max_tokens": 5}
    assert http.headers["Accept"] == "application/json"
    auth = http.headers["Authorization"]
    assert auth.startswith(f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/")
    assert "/eu-west-1/sagemaker/aws4_request, SignedHeaders=" in auth
    assert "content-type;host;x-amz-date" in auth
    assert verify_sigv4(recorded(http), {ACCESS_KEY: SECRET_KEY}, "eu-west-1") is None
    assert SECRET_KEY not in repr(http)


def test_build_chat_stream_uses_the_stream_operation() -> None:
    http = sagemaker.build_chat(spec(component="ic-1", variant="v2"), request(True), "ic-1")
    assert http.url.endswith("/endpoints/ep-1/invocations-response-stream")
    assert http.headers["X-Amzn-SageMaker-Accept"] == "application/jsonlines, text/event-stream"
    assert "Accept" not in http.headers
    assert http.headers["X-Amzn-SageMaker-Inference-Component"] == "ic-1"
    assert http.headers["X-Amzn-SageMaker-Target-Variant"] == "v2"
    assert json.loads(http.body) == {"messages": HI, "stream": True}
    assert verify_sigv4(recorded(http), {ACCESS_KEY: SECRET_KEY}, "eu-west-1") is None


def test_session_token_is_signed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SESSION_TOKEN", "tok")
    http = sagemaker.build_chat(spec(), request(), "ep-1")
    assert http.headers["X-Amz-Security-Token"] == "tok"
    assert "x-amz-security-token" in http.headers["Authorization"]


def test_custom_attributes_must_be_visible_ascii() -> None:
    with pytest.raises(ConfigError, match="custom_attributes"):
        sagemaker.build_chat(spec(custom_attributes="caf\u00e9"), request(), "ep-1")


@pytest.mark.parametrize("name", ["", "-x", "a_b", "a" * 64, "x/y"])
def test_endpoint_name_is_checked(name: str) -> None:
    with pytest.raises(ConfigError, match="ENDPOINT-NAME"):
        sagemaker.endpoint_name(spec(endpoint=name))


def test_unknown_dialect() -> None:
    with pytest.raises(ConfigError, match="dialect"):
        sagemaker.build_chat(spec(dialect="bedrock"), request(), "ep-1")


def test_runtime_url_precedence() -> None:
    env = {"AWS_ENDPOINT_URL": "http://all:1", "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": "http://rt:2/"}
    assert sagemaker.runtime_url(spec(endpoint_url="https://vpce-1.example/"), env) == (
        "https://vpce-1.example"
    )
    assert sagemaker.runtime_url(spec(), env) == "http://rt:2"
    assert sagemaker.runtime_url(spec(), {"AWS_ENDPOINT_URL": "http://all:1"}) == "http://all:1"
    ignored = {**env, "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true"}
    assert sagemaker.runtime_url(spec(), ignored) == (
        "https://runtime.sagemaker.eu-west-1.amazonaws.com"
    )
    assert sagemaker.runtime_url(spec(region="cn-north-1"), {}) == (
        "https://runtime.sagemaker.cn-north-1.amazonaws.com.cn"
    )
    assert sagemaker.runtime_url(spec(region=""), {"AWS_REGION": "ap-south-1"}).endswith(
        "ap-south-1.amazonaws.com"
    )
    with pytest.raises(ConfigError, match="endpoint_url"):
        sagemaker.runtime_url(spec(endpoint_url="vpce-1.example"), {})


def test_control_url() -> None:
    assert sagemaker.control_url(spec(), {}) == "https://api.sagemaker.eu-west-1.amazonaws.com"
    env = {"AWS_ENDPOINT_URL": "http://all:1", "AWS_ENDPOINT_URL_SAGEMAKER": "http://cp:3"}
    assert sagemaker.control_url(spec(), env) == "http://cp:3"


def test_models_and_health_describe_the_endpoint() -> None:
    http = sagemaker.build_models(spec())
    assert http.url == "https://api.sagemaker.eu-west-1.amazonaws.com/"
    assert http.headers["X-Amz-Target"] == "SageMaker.DescribeEndpoint"
    assert json.loads(http.body) == {"EndpointName": "ep-1"}
    assert sagemaker.build_health(spec()).headers["X-Amz-Target"] == "SageMaker.DescribeEndpoint"
    models = sagemaker.parse_models(spec(component="ic"), b'{"CreationTime": 1700000000.5}')
    assert [(m.id, m.created, m.owned_by) for m in models.data] == [
        ("ep-1", 1700000000, "sagemaker")
    ]
    assert sagemaker.parse_models(spec(model=None, component="ic"), b"{}").data[0].id == "ic"
    with pytest.raises(ProtocolError):
        sagemaker.parse_models(spec(), b"[]")


def test_missing_botocore(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "botocore.session", None)
    with pytest.raises(MissingDependencyError, match=r"llmrouter\[sagemaker\]"):
        sagemaker.build_chat(spec(), request(), "ep-1")


def test_credentials_are_resolved_once(monkeypatch: pytest.MonkeyPatch) -> None:
    assert sagemaker.needs_prepare(spec())
    sagemaker.prepare(spec())
    assert not sagemaker.needs_prepare(spec())  # static keys never need a refresh
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")  # cached: the chain is not walked again
    assert ACCESS_KEY in sagemaker.build_chat(spec(), request(), "ep-1").headers["Authorization"]
    sagemaker.reset_credentials()
    with pytest.raises(ConfigError, match="no AWS credentials"):
        sagemaker.prepare(spec())


def test_refresh_failure_is_a_connection_error(monkeypatch: pytest.MonkeyPatch) -> None:
    class Expired:
        def get_frozen_credentials(self) -> None:
            raise RuntimeError("IMDS unreachable")

    monkeypatch.setitem(sigv4._credentials, None, Expired())
    assert not sagemaker.needs_prepare(spec())
    with pytest.raises(BackendConnectionError, match="IMDS unreachable"):
        sagemaker.build_chat(spec(), request(), "ep-1")


# ---------------------------------------------------------------------------------------------
# The tgi dialect


def test_render_prompt_templates() -> None:
    messages = [
        {"role": "developer", "content": "Be terse."},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "c"},
    ]
    assert sagemaker.render_prompt(messages, "chatml") == (
        "<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\na\nb<|im_end|>\n"
        "<|im_start|>assistant\nok<|im_end|>\n<|im_start|>user\nc<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert sagemaker.render_prompt(messages[3:], "llama3") == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nc<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


@pytest.mark.parametrize(
    ("messages", "template", "match"),
    [
        (HI, "mistral", "chat_template"),
        ([{"role": "tool", "content": "x", "tool_call_id": "c"}], "chatml", "tool"),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
         "chatml", "text only"),
    ],
)  # fmt: skip
def test_render_prompt_refuses(messages: Any, template: str, match: str) -> None:
    with pytest.raises(InvalidRequestError, match=match):
        sagemaker.render_prompt(messages, template)


def test_tgi_body() -> None:
    schema = {"type": "object"}
    req = request(
        True,
        max_completion_tokens=9,
        temperature=0.7,
        top_p=1.0,
        seed=3,
        frequency_penalty=0.5,
        stop=["x", "y"],
        user="u",
        response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": schema}},
        extra_body={"parameters": {"top_k": 5}, "add_special_tokens": False},
    )
    body = json.loads(sagemaker.build_chat(spec(dialect="tgi"), req, "ep-1").body)
    assert body == {
        "inputs": "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
        "parameters": {
            "details": True, "max_new_tokens": 9, "temperature": 0.7, "seed": 3,
            "frequency_penalty": 0.5, "stop": ["x", "y"], "top_k": 5,
            "grammar": {"type": "json", "value": schema},
        },
        "stream": True,
        "add_special_tokens": False,
    }  # fmt: skip


@pytest.mark.parametrize(
    "kw",
    [
        {"presence_penalty": 0.1},
        {"n": 2},
        {"logprobs": True},
        {"tools": [{"type": "function", "function": {"name": "f"}}]},
        {"tool_choice": "auto"},
        {"response_format": {"type": "json_object"}},
    ],
)
def test_tgi_dialect_refuses(kw: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequestError, match="tgi dialect"):
        sagemaker.build_chat(spec(dialect="tgi"), request(**kw), "ep-1")


def test_parse_generate_answers() -> None:
    tgi = spec(dialect="tgi")
    details = {"finish_reason": "length", "generated_tokens": 4, "prefill": [{}, {}]}
    resp = sagemaker.parse_chat(
        tgi, json.dumps([{"generated_text": "hey", "details": details}]).encode()
    )
    assert resp.choices[0].message.content == "hey"
    assert resp.choices[0].finish_reason == "length"
    assert resp.usage is not None and resp.usage.prompt_tokens == 2 and resp.usage.total_tokens == 6
    resp = sagemaker.parse_chat(tgi, b'{"generated_text": "lmi"}')
    assert resp.choices[0].message.content == "lmi" and resp.usage is None
    with pytest.raises(ServerError, match="finish_reason: error"):
        sagemaker.parse_chat(tgi, b'{"generated_text": "", "details": {"finish_reason": "error"}}')
    with pytest.raises(BadRequestError, match="bad input"):
        sagemaker.parse_chat(tgi, b'{"error": "bad input", "error_type": "validation"}')
    with pytest.raises(BadRequestError, match="lmi says no"):
        sagemaker.parse_chat(tgi, b'{"error": "lmi says no", "code": 424}'.replace(b"424", b"400"))
    with pytest.raises(ProtocolError):
        sagemaker.parse_chat(tgi, b'{"outputs": ["x"]}')
    with pytest.raises(ProtocolError):
        sagemaker.parse_chat(tgi, b"<html>")


# ---------------------------------------------------------------------------------------------
# Errors


def _error(status: int, body: Any, headers: dict[str, str] | None = None) -> Any:
    raw = json.dumps(body).encode() if not isinstance(body, bytes) else body
    return sagemaker.map_error(spec(), status, headers or {}, raw)


def test_model_error_maps_like_the_container_status() -> None:
    body = {
        "ErrorCode": "CLIENT_ERROR_FROM_MODEL",
        "Message": "Received client error (422) from primary",
        "OriginalStatusCode": 422,
        "OriginalMessage": '{"error":"Input validation error: `inputs` must have less than '
        '4096 tokens","error_type":"validation"}',
    }
    error = _error(424, body, {"X-Amzn-ErrorType": "ModelError", "X-Amzn-RequestId": "rid"})
    assert type(error) is ContextLengthError
    assert (
        error.status_code == 422 and error.request_id == "rid" and error.error_type == "ModelError"
    )
    assert error.body == body and not error.retryable
    assert type(_error(424, {"message": "m"}, {"x-amzn-ErrorType": "ModelError"})) is ServerError


@pytest.mark.parametrize(
    ("status", "body", "cls", "retryable"),
    [
        (400, {"__type": "com.amazon.coral.service#ExpiredTokenException", "message": "expired"},
         AuthenticationError, False),
        (403, {"message": "The security token included is invalid."}, AuthenticationError, False),
        (400, {"__type": "ValidationException", "message": 'Could not find endpoint "x".'},
         NotFoundError, False),
        (400, {"code": "ValidationError", "message": "Endpoint x of account 1 not found."},
         NotFoundError, False),
        (400, {"Code": "ValidationError", "Message": "bad"}, BadRequestError, False),
        (400, {"code": "ThrottlingException", "message": "Rate exceeded"}, RateLimitError, True),
        (429, {"code": "ModelNotReadyException", "message": "loading"}, RateLimitError, True),
        (500, {"code": "InternalFailure", "message": "x"}, ServerError, True),
        (503, b"<html>Service Unavailable</html>", ServerError, True),
        (530, {"code": "InternalDependencyException", "message": "x"}, ServerError, False),
    ],
)  # fmt: skip
def test_error_codes(status: int, body: Any, cls: type[Exception], retryable: bool) -> None:
    error = _error(status, body)
    assert type(error) is cls
    assert error.retryable is retryable
    assert error.status_code == status


# ---------------------------------------------------------------------------------------------
# Streams


def _wire(output: bytes, sizes: list[int]) -> bytes:
    parts, pos = [], 0
    for size in sizes:
        if pos >= len(output):
            break
        parts.append(output[pos : pos + size])
        pos += size
    if pos < len(output):
        parts.append(output[pos:])
    return b"".join(payload_part(p) for p in parts)


def _drain(decoder: Any, wire: bytes, cuts: list[int]) -> list[Any]:
    points = sorted({c % (len(wire) + 1) for c in cuts} | {0, len(wire)})
    chunks = []
    for start, end in itertools.pairwise(points):
        for event in decoder.feed(wire[start:end]):
            chunk = decoder.parse(event)
            if chunk is not None:
                chunks.append(chunk)
    for event in decoder.close():
        chunk = decoder.parse(event)
        if chunk is not None:
            chunks.append(chunk)
    decoder.check_end()
    return chunks


TEXTS = ("Gr\u00fc\u00dfe ", "\U0001f30d", " done")


@settings(max_examples=100, deadline=None, derandomize=True)
@given(
    flavour=st.sampled_from(["sse", "jsonlines", "tgi-sse", "tgi-jsonlines"]),
    sizes=st.lists(st.integers(min_value=1, max_value=40), max_size=40),
    cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=10),
)
def test_stream_any_split(flavour: str, sizes: list[int], cuts: list[int]) -> None:
    if flavour == "sse":
        output, the_spec = sse_chat(*TEXTS), spec()
    elif flavour == "jsonlines":
        output, the_spec = jsonlines_chat(*TEXTS), spec()
    else:
        output = token_events(*TEXTS, sse=flavour == "tgi-sse")
        the_spec = spec(dialect="tgi")
    decoder = sagemaker.ChunkDecoder(the_spec)
    chunks = _drain(decoder, _wire(output, sizes), cuts)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "".join(TEXTS)
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert decoder.finished


def test_stream_failure_after_content() -> None:
    decoder = sagemaker.ChunkDecoder(spec())
    wire = payload_part(sse_chat("a", finish=None, done=False)) + failure_frame(
        StreamFailure("ModelStreamError", "too slow", "ModelInvocationTimeExceeded")
    )
    events = decoder.feed(wire)
    assert [c.choices[0].delta.content for c in map(decoder.parse, events[:2])] == ["", "a"]
    with pytest.raises(
        BackendTimeoutError, match=r"ModelStreamError \(ModelInvocationTimeExceeded\): too slow"
    ):
        decoder.parse(events[2])
    assert decoder.feed(payload_part(b"data:[DONE]\n\n")) == []  # nothing after an exception


def test_unmodeled_error_and_unknown_events() -> None:
    decoder = sagemaker.ChunkDecoder(spec())
    wire = encode_message({":message-type": "event", ":event-type": "FutureThing"}, b"x")
    wire += encode_message(
        {":message-type": "error", ":error-code": "InternalError", ":error-message": "oops"}
    )
    (event,) = decoder.feed(wire)
    with pytest.raises(BackendConnectionError, match="InternalError: oops"):
        decoder.parse(event)


def test_end_of_body() -> None:
    decoder = sagemaker.ChunkDecoder(spec())
    events = decoder.feed(payload_part(jsonlines_chat("x", finish=None, end=False)))
    for event in events:
        decoder.parse(event)
    with pytest.raises(BackendConnectionError, match="before the container finished"):
        decoder.check_end()
    decoder = sagemaker.ChunkDecoder(spec())
    events = decoder.feed(payload_part(jsonlines_chat("x").rstrip(b"\n")))
    events += decoder.close()  # the last line lacked its newline: still whole JSON
    for event in events:
        decoder.parse(event)
    assert decoder.finished
    decoder = sagemaker.ChunkDecoder(spec())
    decoder.feed(payload_part(b'{"id": "cut'))
    assert decoder.close() == []


def test_refreshable_credentials_refresh_in_prepare(monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import datetime, timedelta, timezone

    from botocore.credentials import RefreshableCredentials

    calls = []

    def refresh() -> dict[str, str]:
        calls.append(1)
        expiry = datetime.now(timezone.utc) + timedelta(hours=1)
        return {
            "access_key": ACCESS_KEY,
            "secret_key": SECRET_KEY,
            "token": "fresh-token",
            "expiry_time": expiry.isoformat(),
        }

    soon = datetime.now(timezone.utc) + timedelta(seconds=60)
    creds = RefreshableCredentials(ACCESS_KEY, SECRET_KEY, "old", soon, refresh, "test")
    monkeypatch.setitem(sigv4._credentials, None, creds)
    assert sagemaker.needs_prepare(spec())  # inside botocore's refresh window
    sagemaker.prepare(spec())
    assert calls == [1] and not sagemaker.needs_prepare(spec())
    http = sagemaker.build_chat(spec(), request(), "ep-1")
    assert http.headers["X-Amz-Security-Token"] == "fresh-token" and calls == [1]

"""Unit tests of ``llmrouter._status``: HTTP status + body -> typed error, and Retry-After.

Body shapes and retry headers from ``shared/protocols/openai-chat.md`` sections 4 and 6.
Headers are passed as ``httpx2.Headers`` (case-insensitive), as the transports do.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from email.utils import format_datetime
from typing import Any

import httpx2
import pytest

from llmrouter import errors
from llmrouter._status import error_from_status, parse_retry_after

BACKEND = "http://gpu-1:8000/v1"
NOW = 1_760_000_000.0


def openai_body(message: str, type_: str = "invalid_request_error", **more: Any) -> bytes:
    error = {"message": message, "type": type_, "param": None, "code": None, **more}
    return json.dumps({"error": error}).encode()


def mapped(
    status: int, body: bytes | str = b"", headers: dict[str, str] | None = None
) -> errors.StatusError:
    content = body.encode() if isinstance(body, str) else body
    return error_from_status(status, httpx2.Headers(headers or {}), content, backend=BACKEND)


LLAMA_CPP_PYTHON_VALIDATION = openai_body(
    "[{'type': 'missing', 'loc': ('body', 'messages'), 'msg': 'Field required', "
    "'input': {'model': 'x'}}]",
    "internal_server_error",
)

CASES = [
    # (status, body, expected class, expected message fragment, expected error_type)
    (
        400,
        openai_body("temperature must be <= 2"),
        errors.BadRequestError,
        "temperature must be <= 2",
        "invalid_request_error",
    ),
    (
        400,
        openai_body(
            "This model's maximum context length is 2048 tokens. However, you "
            "requested 3000 tokens."
        ),
        errors.ContextLengthError,
        "maximum context",
        None,
    ),
    (
        400,
        openai_body(
            "request (5000 tokens) exceeds the available context size (4096 tokens)",
            "exceed_context_size_error",
        ),
        errors.ContextLengthError,
        "exceeds",
        None,
    ),
    (413, b"payload too large", errors.BadRequestError, "payload too large", None),
    (
        422,
        json.dumps(
            {
                "error": "Input validation error: `inputs` tokens + `max_new_tokens` must "
                "be <= 4096. Given: 4000 `inputs` tokens and 200 `max_new_tokens`",
                "error_type": "validation",
            }
        ),
        errors.ContextLengthError,
        "Input validation error",
        "validation",
    ),
    (
        422,
        json.dumps(
            {"error": "Grammar and tools are mutually exclusive", "error_type": "validation"}
        ),
        errors.BadRequestError,
        "mutually exclusive",
        "validation",
    ),
    (
        422,
        json.dumps({"detail": [{"loc": ["body", "messages"], "msg": "field required"}]}),
        errors.BadRequestError,
        "field required",
        None,
    ),
    (
        400,
        b"Failed to parse the request body as JSON: expected value at line 1 column 1",
        errors.BadRequestError,
        "Failed to parse the request body",
        None,
    ),
    (401, json.dumps({"error": "Unauthorized"}), errors.AuthenticationError, "Unauthorized", None),
    (
        403,
        openai_body("Country, region, or territory not supported", "request_forbidden"),
        errors.AuthenticationError,
        "not supported",
        "request_forbidden",
    ),
    (
        404,
        openai_body("The model `x` does not exist. Valid aliases: m", "NotFoundError"),
        errors.NotFoundError,
        "does not exist",
        "NotFoundError",
    ),
    (404, json.dumps({"detail": "Not Found"}), errors.NotFoundError, "Not Found", None),
    (429, openai_body("Rate limit reached", "requests"), errors.RateLimitError, "Rate limit", None),
    (
        500,
        openai_body("The server had an error while processing your request.", "api_error"),
        errors.ServerError,
        "server had an error",
        "api_error",
    ),
    (500, LLAMA_CPP_PYTHON_VALIDATION, errors.BadRequestError, "Field required", None),
    (
        503,
        openai_body("Loading model", "unavailable_error", code=503),
        errors.ServerError,
        "Loading model",
        "unavailable_error",
    ),
    (
        529,
        json.dumps(
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
        ),
        errors.ServerError,
        "Overloaded",
        "overloaded_error",
    ),
    (
        502,
        b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad "
        b"Gateway</h1></center><hr><center>nginx</center></body></html>",
        errors.ServerError,
        "non-JSON error page",
        None,
    ),
    (500, b"", errors.ServerError, "empty body", None),
    (409, openai_body("conflict", "conflict"), errors.StatusError, "conflict", None),
]


@pytest.mark.parametrize(("status", "body", "cls", "fragment", "error_type"), CASES)
def test_status_and_body_map_to_the_error_tree(
    status: int, body: bytes, cls: type[errors.StatusError], fragment: str, error_type: str | None
) -> None:
    error = mapped(status, body)
    assert type(error) is cls
    assert error.status_code == status
    assert error.backend == BACKEND
    assert fragment in error.message
    assert str(error).startswith(f"{BACKEND}: HTTP {status}: ")
    if error_type is not None:
        assert error.error_type == error_type


def test_json_body_is_kept_parsed_and_text_body_as_text() -> None:
    assert mapped(400, openai_body("bad")).body == json.loads(openai_body("bad"))
    assert mapped(400, b"plain words").body == "plain words"


def test_html_error_page_is_summarised_not_copied() -> None:
    page = "<!DOCTYPE html><html>" + "<p>lots of markup</p>" * 200 + "</html>"
    error = mapped(502, page)
    assert isinstance(error, errors.ServerError)
    assert "<" not in error.message
    assert len(str(error)) < 200
    assert error.body == page


def test_long_plain_text_is_truncated_in_the_message() -> None:
    error = mapped(500, "x" * 5000)
    assert error.message.count("x") == 500
    assert len(error.body) == 5000


def test_undecodable_body_does_not_crash() -> None:
    error = mapped(500, b"\xff\xfe\x00garbage")
    assert isinstance(error, errors.ServerError)


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        (400, False),
        (401, False),
        (404, False),
        (408, True),
        (409, True),
        (422, False),
        (429, True),
        (500, True),
        (502, True),
        (503, True),
    ],
)
def test_default_retryable_by_status(status: int, retryable: bool) -> None:
    assert mapped(status, b"{}").retryable is retryable


@pytest.mark.parametrize(
    ("status", "header", "retryable"),
    [(500, "false", False), (429, "false", False), (400, "true", True), (409, "false", False)],
)
def test_x_should_retry_overrides_the_status(status: int, header: str, retryable: bool) -> None:
    assert mapped(status, b"{}", {"x-should-retry": header}).retryable is retryable


def test_x_should_retry_with_another_value_is_ignored() -> None:
    assert mapped(500, b"{}", {"x-should-retry": "maybe"}).retryable is True


@pytest.mark.parametrize("name", ["x-request-id", "X-Request-ID", "request-id", "x-amzn-RequestId"])
def test_request_id_header(name: str) -> None:
    assert mapped(500, b"{}", {name: "req_123"}).request_id == "req_123"


def test_no_request_id_and_no_retry_after_by_default() -> None:
    error = mapped(429, b"{}")
    assert error.request_id is None
    assert error.retry_after is None


def test_rate_limit_carries_retry_after() -> None:
    assert mapped(429, b"{}", {"Retry-After": "3"}).retry_after == 3.0


def test_context_length_from_the_openai_error_code() -> None:
    # Regression test (found while writing this suite).
    body = openai_body("Please reduce the length of the messages.", code="context_length_exceeded")
    assert isinstance(mapped(400, body), errors.ContextLengthError)


# ---------------------------------------------------------------------------------------------
# parse_retry_after


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after": "7"}, 7.0),
        ({"Retry-After": "7"}, 7.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after": "0"}, 0.0),
        ({"retry-after": "-4"}, 0.0),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),  # ms wins (openai-python order)
        ({"retry-after-ms": "soon", "retry-after": "9"}, 9.0),  # a bad ms falls back
        ({"retry-after": "in a while"}, None),
        ({"retry-after": ""}, None),
        ({}, None),
    ],
)
def test_retry_after_seconds_and_ms(headers: dict[str, str], seconds: float | None) -> None:
    assert parse_retry_after(httpx2.Headers(headers), now=NOW) == seconds


def test_plain_lowercase_dict_works() -> None:
    assert parse_retry_after({"retry-after": "2"}) == 2.0


def test_retry_after_http_date_uses_the_injected_clock() -> None:
    when = format_datetime(datetime.fromtimestamp(NOW + 30, tz=timezone.utc), usegmt=True)
    assert when.endswith("GMT")
    assert parse_retry_after(httpx2.Headers({"Retry-After": when}), now=NOW) == 30.0


def test_retry_after_http_date_in_the_past_is_zero() -> None:
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, now=NOW) == 0.0


@pytest.mark.parametrize("raw", ["nan", "inf"])
def test_retry_after_rejects_non_finite_numbers(raw: str) -> None:
    # Regression test (found while writing this suite).
    assert parse_retry_after({"retry-after": raw}, now=NOW) is None

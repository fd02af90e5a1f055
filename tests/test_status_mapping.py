"""Unit tests of ``llmrouter._status``: HTTP status + body -> typed error, and Retry-After.

Body shapes and retry headers from ``shared/protocols/openai-chat.md`` sections 4 and 6.
"""

from __future__ import annotations

import json
from email.utils import format_datetime
from datetime import datetime, timezone
from typing import Any

import httpx2
import pytest

from llmrouter import errors
from llmrouter._status import error_from_status, parse_retry_after

BACKEND = "http://gpu-1:8000/v1"
NOW = 1_760_000_000.0


def openai_error(message: str, type_: str = "invalid_request_error", code: Any = None) -> bytes:
    return json.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}})
    .encode()


def mapped(status: int, body: bytes | str = b"", **headers: str) -> errors.StatusError:
    content = body.encode() if isinstance(body, str) else body
    return error_from_status(status, httpx2.Headers(headers), content, backend=BACKEND)

"""Structured access logs: one JSON object per request on the ``llmrouter.access`` logger.

A line holds the request id, method, path, status, the key *id* (never the key), the backend
that served, the number of attempts, latency and time to first token in milliseconds, tokens in
and out, and the error class when there was one. Message content (the request's messages and
the answer's text) is added only with ``--log-content``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["AccessRecord", "access_logger"]

access_logger = logging.getLogger("llmrouter.access")


@dataclass(slots=True)
class AccessRecord:
    """What one request did, filled in while it is served and logged once at the end."""

    request_id: str
    method: str
    path: str
    started: float = field(default_factory=time.monotonic)
    status: int = 0
    key_id: str | None = None
    backend: str | None = None
    attempts: int = 0
    stream: bool | None = None
    ttft_s: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error: str | None = None
    messages: Any = None
    response_text: str | None = None

    def line(self, now: float, log_content: bool) -> str:
        """The JSON line."""
        entry: dict[str, Any] = {
            "ts": round(time.time(), 3),
            "request_id": self.request_id,
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "key_id": self.key_id,
            "backend": self.backend,
            "attempts": self.attempts,
            "stream": self.stream,
            "latency_ms": round((now - self.started) * 1000, 1),
            "ttft_ms": None if self.ttft_s is None else round(self.ttft_s * 1000, 1),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "error": self.error,
        }
        if log_content:
            entry["messages"] = self.messages
            entry["response"] = self.response_text
        return json.dumps(entry, separators=(",", ":"), default=str)

    def emit(self, log_content: bool) -> None:
        """Log the line at INFO (skipped when the logger is off)."""
        if access_logger.isEnabledFor(logging.INFO):
            access_logger.info("%s", self.line(time.monotonic(), log_content))

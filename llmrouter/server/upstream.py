"""What a client is told about a backend's error, and what the log keeps of it (pure).

A backend's error text is written for its operator, not for the gateway's callers: llama.cpp's
Python server, for one, answers a bad ``response_format`` with a 400 whose message holds a
traceback line and the server's file paths. The gateway relays the error *class* and a safe
message: the first line of the backend's text, with code locations and file paths cut, secrets
masked, at most 200 characters, or no text at all when it is a traceback. The whole text, with
secrets masked, goes to the ``llmrouter.server`` log and, with ``--debug``, to the answer.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["MAX_SAFE", "attempt_line", "raw_text", "safe_message", "scrub_secrets"]

MAX_SAFE = 200

# A Python traceback, or one frame of it, anywhere in the text.
_TRACEBACK = re.compile(r"Traceback \(most recent call last\)|File \"[^\"]*\", line \d+")
# Filesystem paths with at least two components: /usr/lib/python3.11/x.py, C:\srv\app.
_PATH = re.compile(r"(?:\b[A-Za-z]:)?(?:[\\/][\w.@+~-]+){2,}[\\/]?")
# Bearer tokens, "api_key": "...", and OpenAI/Anthropic-style key prefixes.
_SECRET = re.compile(
    r"(?i)(bearer\s+|(?:api[_-]?key|token|secret|password)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]{4,}"
    r"|\b(?:sk|pk|rk|hf)[-_][A-Za-z0-9_-]{8,}"
)


def scrub_secrets(text: str) -> str:
    """``text`` with anything shaped like a key or token replaced by ``***``."""

    def mask(match: re.Match[str]) -> str:
        prefix = match.group(1)
        return f"{prefix}***" if prefix else "***"

    return _SECRET.sub(mask, text)


def safe_message(text: str) -> str:
    """The part of a backend's error text that may reach a client ('' when none may).

    The first non-empty line, file paths replaced by ``<path>``, secrets masked, cut to
    :data:`MAX_SAFE` characters; nothing at all from a traceback.
    """
    if _TRACEBACK.search(text):
        return ""
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    line = scrub_secrets(_PATH.sub("<path>", line))
    return line if len(line) <= MAX_SAFE else line[: MAX_SAFE - 3] + "..."


def raw_text(error: BaseException) -> str:
    """Everything the backend said, for the log: its parsed error body, else the message."""
    body: Any = getattr(error, "body", None)
    if isinstance(body, (dict, list)):
        text = json.dumps(body, ensure_ascii=False, default=str)
    elif isinstance(body, str) and body:
        text = body
    else:
        text = str(getattr(error, "message", None) or error)
    return scrub_secrets(text)


def attempt_line(error: BaseException) -> str:
    """``ErrorClass: safe message`` for one failed attempt (the class alone when nothing is
    safe to show)."""
    name = type(error).__name__
    message = safe_message(str(getattr(error, "message", None) or error))
    return f"{name}: {message}" if message else name

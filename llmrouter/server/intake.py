"""Reading and checking a chat request's body, so that no input can make the gateway fail.

In order: the size (413), the time the client takes to send it (408), how deeply it nests
(checked on the raw bytes, before parsing, so neither the parser nor anything after it can
recurse out of stack), JSON itself, lone UTF-16 surrogates (``"\\ud800"`` parses, then fails
every encoder), the shape of the fields (the client's own validation), the number of messages
and the estimated prompt size. Each refusal is a 4xx :class:`GatewayError` in OpenAI's shape;
nothing the client sends reaches the code after this module unchecked.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from llmrouter._request import BODY_PARAMS, ChatRequest, build_request
from llmrouter.errors import InvalidRequestError
from llmrouter.server.responses import GatewayError
from llmrouter.server.settings import GatewaySettings

__all__ = ["ChatBody", "estimate_prompt", "nesting_depth", "read_chat_body"]

logger = logging.getLogger("llmrouter.server")

# A JSON string (escapes included), its brackets are not structure; unrolled for speed.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_EMPTY_PAIR = re.compile(rb"\[\]|\{\}")
# A \uD800-\uDFFF escape; only then can a parsed string hold a lone surrogate.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def nesting_depth(raw: bytes, limit: int) -> int:
    """How deeply ``raw``'s arrays and objects nest, counted up to ``limit + 1`` (pure).

    Works on the bytes, at C speed: strings are cut out, everything but brackets deleted, then
    each pass removes the innermost ``[]``/``{}`` pairs; the number of passes is the depth.
    Malformed input stops early (the parser reports it).
    """
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    depth = 0
    while brackets and depth <= limit:
        shorter = _EMPTY_PAIR.sub(b"", brackets)
        if len(shorter) == len(brackets):
            break
        brackets, depth = shorter, depth + 1
    return depth


def _text_chars(content: Any) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        return sum(
            len(part["text"])
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return 0


def estimate_prompt(messages: list[dict[str, Any]], tools: Any) -> int:
    """A prompt's size in tokens before any backend counted it: 4 characters of text a token,
    plus 4 a message for the chat template, plus the tool definitions' JSON (pure)."""
    chars = sum(_text_chars(m.get("content")) for m in messages)
    if tools:
        chars += len(json.dumps(tools, default=str))
    return chars // 4 + 4 * len(messages)


def _invalid(
    message: str, param: str | None, error_class: str, code: str | None = None
) -> GatewayError:
    return GatewayError(
        400, message, "invalid_request_error", param=param, code=code, error_class=error_class
    )


@dataclass(slots=True)
class ChatBody:
    """A checked chat request: what ``create`` gets, and what the limits and the log need."""

    messages: list[dict[str, Any]]
    stream: bool
    kwargs: dict[str, Any]
    size: int
    prompt_estimate: int


def create_kwargs(body: dict[str, Any]) -> dict[str, Any]:
    """The body's fields as ``create`` keyword arguments; unknown fields go in ``extra_body``."""
    kwargs: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for name, value in body.items():
        if name in BODY_PARAMS or name == "model":
            kwargs[name] = value
        elif name not in ("messages", "stream"):
            extra[name] = value  # engine-specific fields (vLLM's top_k, ...), as the SDK sends
    if extra:
        kwargs["extra_body"] = extra
    return kwargs


async def _read(request: web.Request, settings: GatewaySettings) -> bytes:
    limit = settings.max_body_bytes
    too_large = GatewayError(
        413,
        f"request body over the limit of {limit} bytes",
        "invalid_request_error",
        code="request_too_large",
        error_class="RequestTooLarge",
    )
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    try:
        return await asyncio.wait_for(request.read(), settings.body_timeout_s)
    except web.HTTPRequestEntityTooLarge:
        raise too_large from None
    except asyncio.TimeoutError:
        raise GatewayError(
            408,
            f"the request body did not arrive within {settings.body_timeout_s:g} s",
            "invalid_request_error",
            code="request_timeout",
            headers={"Connection": "close"},
            error_class="BodyTimeout",
        ) from None


def _parse(raw: bytes, max_depth: int) -> Any:
    if nesting_depth(raw, max_depth) > max_depth:
        raise _invalid(
            f"body: arrays and objects nest deeper than {max_depth} levels",
            "body",
            "NestedTooDeeply",
        )
    try:
        value = json.loads(raw)
    except RecursionError:  # unbalanced brackets the depth count could not pair up
        raise _invalid("body: malformed JSON: nested too deeply", "body", "MalformedJSON") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise _invalid(f"body: malformed JSON: {exc}", "body", "MalformedJSON") from None
    if _SURROGATE_ESCAPE.search(raw):
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise _invalid(
                "body: a string holds a lone UTF-16 surrogate (\\ud800-\\udfff), "
                "which is not valid Unicode",
                "body",
                "InvalidUnicode",
            ) from None
    return value


def _validate(body: dict[str, Any], settings: GatewaySettings) -> ChatRequest:
    messages = body.get("messages")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if isinstance(messages, list) and len(messages) > settings.max_messages:
        raise _invalid(
            f"messages: {len(messages)} messages, over the limit of {settings.max_messages}",
            "messages",
            "TooManyMessages",
            code="too_many_messages",
        )
    try:
        return build_request(messages, stream, create_kwargs(body))
    except InvalidRequestError as exc:
        raise _invalid(str(exc), exc.param, "InvalidRequestError") from None
    except Exception as exc:  # the validator tripped over an odd value: still the input's fault
        logger.warning(
            "request validation raised %s on a malformed body (answered 400; a validator bug)",
            type(exc).__name__,
        )
        raise _invalid(
            "body: a field has a value of an unexpected type", "body", "InvalidRequestError"
        ) from None


async def read_chat_body(request: web.Request, settings: GatewaySettings) -> ChatBody:
    """The request's body, read within the limits and checked.

    Raises:
        GatewayError: 400, 408 or 413 naming what is wrong.
    """
    raw = await _read(request, settings)
    body = _parse(raw, settings.max_json_depth)
    if not isinstance(body, dict):
        raise _invalid("body: expected a JSON object", "body", "InvalidBody")
    checked = _validate(body, settings)
    estimate = estimate_prompt(checked.messages, body.get("tools"))
    limit = settings.max_prompt_tokens
    if limit is not None and estimate > limit:
        raise _invalid(
            f"messages: the prompt is about {estimate} tokens (4 characters a token), over the "
            f"limit of {limit}",
            "messages",
            "PromptTooLarge",
            code="prompt_too_large",
        )
    return ChatBody(checked.messages, checked.stream, create_kwargs(body), len(raw), estimate)

"""A loopback fake of the Anthropic Messages API, built from ``shared/protocols/anthropic.md``.

It reuses the socket machinery of :mod:`tests.fakes.openai_fake` (raw asyncio streams on a
background thread; ``Stream``, ``Error``, ``Close`` and ``Stall`` answers) and speaks Anthropic's
wire format::

    with AnthropicFake() as fake:
        fake.script(api_error(429, "rate_limit_error", "slow down", {"retry-after": "7"}))
        client = llmrouter.Client(fake.url)   # "anthropic+http://127.0.0.1:PORT?model=..."

``POST /v1/messages`` checks ``x-api-key`` (401 ``authentication_error``) and
``anthropic-version`` (400), then validates the body as the real API does (400
``invalid_request_error``: ``max_tokens`` required, no unknown fields, ``system`` only at the
top level, ``temperature`` at most 1, a ``tool_result`` for every ``tool_use`` in the next
turn...). It is stricter than today's API in one respect: turns must alternate and start with
``user`` (the API now merges same-role turns, anthropic.md 1.1), so the codec's own merging is
what the tests see. Valid requests get the scripted answers in order, then a computed one:

* a forced tool (``tool_choice`` ``any``/``tool``): a ``tool_use`` block whose input is a
  sample of the tool's ``input_schema``;
* after a ``tool_result``: ``Tool said: <result>``;
* otherwise ``Hello! You said: <last user text>``.

Text answers honour ``stop_sequences`` and ``max_tokens`` (a "token" is a word with its trailing
space). A :class:`Reply` is sent as JSON or as the real SSE event sequence (``message_start``,
``content_block_start``, ``ping``, deltas, ``content_block_stop``, ``message_delta``,
``message_stop``), as the request asks; ``Reply(error=...)`` ends a stream with an ``error``
event. ``GET /v1/models`` lists ``fake.models`` in Anthropic's shape.
"""

from __future__ import annotations

import http
import json
import re
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.openai_fake import (
    Close,
    Error,
    OpenAIFake,
    Recorded,
    Stall,
    Stream,
    _chunked,
    _Conn,
)

__all__ = [
    "API_KEY",
    "MODEL",
    "REQUEST_ID",
    "AnthropicFake",
    "Close",
    "Error",
    "Reply",
    "Stall",
    "Stream",
    "api_error",
    "event",
    "text_block",
    "tool_use_block",
]

API_KEY = "sk-ant-fake-0123456789abcdef"
MODEL = "claude-fake-1"
REQUEST_ID = "req_fake0123"
MESSAGE_ID = "msg_fake0123"

_FIELDS = frozenset(
    {
        "model", "max_tokens", "messages", "system", "stop_sequences", "temperature", "top_p",
        "top_k", "tools", "tool_choice", "stream", "metadata", "thinking", "output_config",
        "service_tier", "cache_control", "container", "inference_geo",
    }
)  # fmt: skip
_IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
_TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,128}")


def _head(status: int, headers: dict[str, str]) -> bytes:
    # 529 is Anthropic's own status (overloaded), unknown to http.HTTPStatus.
    phrase = "Overloaded" if status == 529 else http.HTTPStatus(status).phrase
    lines = [f"HTTP/1.1 {status} {phrase}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def text_block(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def tool_use_block(name: str, input: dict[str, Any], id: str = "toolu_01") -> dict[str, Any]:
    return {"type": "tool_use", "id": id, "name": name, "input": input}


@dataclass
class Reply:
    """A 200 message, JSON or SSE as the request asks.

    Attributes:
        content: the content blocks.
        stop_reason: ``end_turn``, ``max_tokens``, ``stop_sequence``, ``tool_use``, ``refusal``.
        usage: the final usage (default: 10 input tokens, one output token per word).
        error: for a stream, an ``error`` event's ``(type, message)`` sent after the first
            block's deltas (or right after ``message_start`` when there is no content);
            no ``message_delta``/``message_stop`` follow.
        cut: for a stream, drop the connection after the last event (no chunked end).
    """

    content: list[dict[str, Any]] = field(default_factory=lambda: [text_block("Hello!")])
    stop_reason: str = "end_turn"
    stop_sequence: str | None = None
    usage: dict[str, Any] | None = None
    model: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    error: tuple[str, str] | None = None
    cut: bool = False


def api_error(status: int, type: str, message: str, headers: dict[str, str] | None = None) -> Error:
    """An Anthropic error answer: ``{"type": "error", "error": {...}, "request_id"}``."""
    body = {"type": "error", "error": {"type": type, "message": message}, "request_id": REQUEST_ID}
    return Error(status, body, {"request-id": REQUEST_ID, **(headers or {})})


def event(name: str, data: Any) -> bytes:
    """One SSE event with its ``event:`` line, as the API sends them."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"event: {name}\ndata: {text}\n\n".encode()


def _words(text: str) -> list[str]:
    return re.findall(r"\S+\s*|\s+", text)


def _sample(schema: Any, name: str) -> Any:
    """A deterministic value matching a (simple) JSON schema."""
    if not isinstance(schema, dict):
        return None
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type", "object")
    if kind == "object":
        props = schema.get("properties") or {}
        return {key: _sample(sub, key) for key, sub in props.items()}
    if kind == "array":
        return [_sample(schema.get("items") or {"type": "string"}, name)]
    return {"string": f"fake {name}", "integer": 1, "number": 1.5, "boolean": True}.get(kind)


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    out = []
    for block in content or []:
        if block.get("type") == "text":
            out.append(block["text"])
        elif block.get("type") == "tool_result":
            out.extend(_texts(block.get("content", "")))
    return out


# ---------------------------------------------------------------------------------------------
# Validation, as the real API answers it (400 invalid_request_error)


def _check_block(block: Any, role: str, where: str) -> str | None:
    if not isinstance(block, dict):
        return f"{where}: Input should be a valid dictionary"
    kind = block.get("type")
    if kind == "text":
        if not isinstance(block.get("text"), str) or not block["text"]:
            return f"{where}: text content blocks must be non-empty"
    elif kind == "image":
        source = block.get("source") or {}
        if source.get("type") == "base64":
            if source.get("media_type") not in _IMAGE_TYPES or not source.get("data"):
                return f"{where}.source: invalid base64 image source"
        elif source.get("type") != "url" or not source.get("url"):
            return f"{where}.source: Input tag does not match any of the expected tags"
    elif kind == "tool_use":
        if role != "assistant":
            return f"{where}: tool_use blocks are only allowed in assistant messages"
        if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
            return f"{where}: tool_use blocks need an id and a name"
        if not isinstance(block.get("input"), dict):
            return f"{where}.input: Input should be a valid dictionary"
    elif kind == "tool_result":
        if role != "user":
            return f"{where}: tool_result blocks are only allowed in user messages"
        if not isinstance(block.get("tool_use_id"), str):
            return f"{where}.tool_use_id: Field required"
    else:
        return f"{where}.type: Input tag {kind!r} does not match any of the expected tags"
    return None


def _check_messages(messages: Any) -> str | None:
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    previous_tool_ids: set[str] = set()
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        role = message.get("role") if isinstance(message, dict) else None
        if role == "system":
            return (
                f'{where}.role: Unexpected role "system". The Messages API accepts a top-level '
                '`system` parameter, not "system" as an input message role.'
            )
        if role not in ("user", "assistant"):
            return f"{where}.role: Input should be 'user' or 'assistant'"
        if i == 0 and role != "user":
            return 'messages: first message must use the "user" role'
        if i > 0 and messages[i - 1].get("role") == role:
            return (
                'messages: roles must alternate between "user" and "assistant", '
                f'but found multiple "{role}" roles in a row'
            )
        content = message.get("content")
        blocks = [text_block(content)] if isinstance(content, str) else content
        if not isinstance(blocks, list) or not blocks or content == "":
            return (
                f"{where}: all messages must have non-empty content except for the optional "
                "final assistant message"
            )
        for j, block in enumerate(blocks):
            problem = _check_block(block, role, f"{where}.content.{j}")
            if problem:
                return problem
        results = [b["tool_use_id"] for b in blocks if b.get("type") == "tool_result"]
        if results and any(b.get("type") != "tool_result" for b in blocks[: len(results)]):
            return f"{where}: tool_result blocks must come first in the content"
        if role == "user":
            unknown = [r for r in results if r not in previous_tool_ids]
            if unknown:
                return (
                    f"{where}.content: unexpected `tool_use_id` found in `tool_result` blocks: "
                    f"{unknown[0]}. Each `tool_result` block must have a corresponding "
                    "`tool_use` block in the previous message."
                )
            missing = previous_tool_ids - set(results)
            if missing:
                return (
                    f"{where}: `tool_use` ids were found without `tool_result` blocks "
                    f"immediately after: {sorted(missing)[0]}"
                )
            previous_tool_ids = set()
        else:
            previous_tool_ids = {b["id"] for b in blocks if b.get("type") == "tool_use"}
    if previous_tool_ids:
        return (
            f"messages.{len(messages)}: `tool_use` ids were found without `tool_result` blocks "
            f"immediately after: {sorted(previous_tool_ids)[0]}"
        )
    return None


def _check_tools(body: dict[str, Any]) -> str | None:
    tools = body.get("tools")
    names: list[str] = []
    if tools is not None:
        if not isinstance(tools, list):
            return "tools: Input should be a valid list"
        for i, tool in enumerate(tools):
            name = tool.get("name") if isinstance(tool, dict) else None
            if not isinstance(name, str) or not _TOOL_NAME.fullmatch(name):
                return f"tools.{i}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'"
            schema = tool.get("input_schema")
            if not isinstance(schema, dict) or schema.get("type") != "object":
                return f"tools.{i}.input_schema.type: Input should be 'object'"
            if name in names:
                return "tools: Tool names must be unique."
            names.append(name)
    choice = body.get("tool_choice")
    if choice is not None:
        if not isinstance(choice, dict) or choice.get("type") not in (
            "auto",
            "any",
            "tool",
            "none",
        ):
            return "tool_choice: Input tag does not match any of the expected tags"
        if not names:
            return "tool_choice: tool_choice may only be specified while providing tools"
        if choice["type"] == "tool" and choice.get("name") not in names:
            return f"tool_choice.name: no tool named {choice.get('name')!r}"
    return None


def validate(body: Any) -> str | None:
    """The message of the 400 the real API would answer, or ``None`` for a valid body."""
    if not isinstance(body, dict):
        return "Invalid request body: expected a JSON object"
    for key in body:
        if key not in _FIELDS:
            return f"{key}: Extra inputs are not permitted"
    if not isinstance(body.get("model"), str):
        return "model: Field required"
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        return "max_tokens: Field required"
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        return "max_tokens: Input should be greater than or equal to 1"
    system = body.get("system")
    system_blocks = [text_block(system)] if isinstance(system, str) else system or []
    if not isinstance(system_blocks, list) or any(
        not isinstance(b, dict) or b.get("type") != "text" for b in system_blocks
    ):
        return "system: Input should be a valid string or a list of text blocks"
    for name in ("temperature", "top_p"):
        value = body.get(name)
        if value is not None and (not isinstance(value, (int, float)) or not 0 <= value <= 1):
            return f"{name}: Input should be less than or equal to 1"
    stops = body.get("stop_sequences")
    if stops is not None and (
        not isinstance(stops, list) or not all(isinstance(s, str) for s in stops)
    ):
        return "stop_sequences: Input should be a valid list of strings"
    if "stream" in body and not isinstance(body["stream"], bool):
        return "stream: Input should be a valid boolean"
    metadata = body.get("metadata")
    if metadata is not None and (not isinstance(metadata, dict) or set(metadata) - {"user_id"}):
        return "metadata: Extra inputs are not permitted"
    return _check_tools(body) or _check_messages(body.get("messages"))


# ---------------------------------------------------------------------------------------------
# Answers


def _usage(reply: Reply, input_tokens: int) -> dict[str, Any]:
    if reply.usage is not None:
        return dict(reply.usage)
    words = sum(len(_words(b.get("text", ""))) for b in reply.content)
    words += sum(1 for b in reply.content if b["type"] == "tool_use")
    return {
        "input_tokens": input_tokens,
        "output_tokens": words,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def message_json(reply: Reply, model: str, input_tokens: int = 10) -> dict[str, Any]:
    """The non-streamed ``message`` object."""
    return {
        "id": MESSAGE_ID,
        "type": "message",
        "role": "assistant",
        "model": reply.model or model,
        "content": reply.content,
        "stop_reason": reply.stop_reason,
        "stop_sequence": reply.stop_sequence,
        "usage": _usage(reply, input_tokens),
    }


def message_events(reply: Reply, model: str, input_tokens: int = 10) -> list[bytes]:
    """The SSE events of ``reply``, in the API's order (anthropic.md 3)."""
    usage = _usage(reply, input_tokens)
    start = message_json(Reply(content=[], model=reply.model), model, input_tokens)
    start.update(stop_reason=None, stop_sequence=None)
    start["usage"] = {**usage, "output_tokens": 1}
    frames = [event("message_start", {"type": "message_start", "message": start})]
    for index, block in enumerate(reply.content):
        if block["type"] == "tool_use":
            opened = {**block, "input": {}}
            text = json.dumps(block["input"])
            half = len(text) // 2
            deltas = [
                {"type": "input_json_delta", "partial_json": part}
                for part in ("", text[:half], text[half:])
            ]
        else:
            opened = {**block, "text": ""}
            deltas = [{"type": "text_delta", "text": w} for w in _words(block.get("text", ""))]
        frames.append(
            event(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": opened},
            )
        )
        if index == 0:
            frames.append(event("ping", {"type": "ping"}))
        for delta in deltas:
            data = {"type": "content_block_delta", "index": index, "delta": delta}
            frames.append(event("content_block_delta", data))
        if reply.error is not None:
            break
        frames.append(event("content_block_stop", {"type": "content_block_stop", "index": index}))
    if reply.error is not None:
        error = {"type": "error", "error": {"type": reply.error[0], "message": reply.error[1]}}
        return [*frames, event("error", error)]
    delta = {"stop_reason": reply.stop_reason, "stop_sequence": reply.stop_sequence}
    frames.append(
        event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": delta,
                "usage": {"output_tokens": usage["output_tokens"]},
            },
        )
    )
    frames.append(event("message_stop", {"type": "message_stop"}))
    return frames


def computed_reply(body: dict[str, Any]) -> Reply:
    """The fake's own deterministic answer to a valid request."""
    choice = body.get("tool_choice") or {}
    tools = {t["name"]: t for t in body.get("tools") or []}
    if choice.get("type") in ("any", "tool"):
        name = choice.get("name") or next(iter(tools))
        content = [tool_use_block(name, _sample(tools[name]["input_schema"], name))]
        return Reply(content=content, stop_reason="tool_use")
    last = body["messages"][-1]
    results = [b for b in last["content"] if isinstance(last["content"], list)]
    results = [b for b in results if b.get("type") == "tool_result"]
    if results:
        text = "Tool said: " + " ".join(_texts(results))
    else:
        text = "Hello! You said: " + " ".join(_texts(last["content"]))
    words = _words(text)
    stop_reason, stop_sequence = "end_turn", None
    if len(words) > body["max_tokens"]:
        text, stop_reason = "".join(words[: body["max_tokens"]]), "max_tokens"
    hits = [(text.find(s), s) for s in body.get("stop_sequences") or [] if s and s in text]
    if hits:
        at, stop_sequence = min(hits)
        text, stop_reason = text[:at], "stop_sequence"
    content = [text_block(text)] if text else []
    return Reply(content=content, stop_reason=stop_reason, stop_sequence=stop_sequence)


def _input_tokens(body: dict[str, Any]) -> int:
    system = body.get("system") or ""
    texts = _texts(system) + [t for m in body["messages"] for t in _texts(m["content"])]
    return sum(len(t.split()) for t in texts)


# ---------------------------------------------------------------------------------------------
# The server


class AnthropicFake(OpenAIFake):
    """The fake Messages API; a context manager running on a background thread.

    Args:
        models: the ids ``GET /v1/models`` lists and ``POST /v1/messages`` accepts.
        api_key: the only key accepted.
    """

    def __init__(self, models: list[str] | None = None, api_key: str = API_KEY) -> None:
        super().__init__(models=list(models) if models is not None else [MODEL])
        self.api_key = api_key

    @property
    def url(self) -> str:
        """The backend URL, model pinned (``?model=``) when the fake serves exactly one."""
        base = f"anthropic+http://127.0.0.1:{self.port}"
        return f"{base}?model={self.models[0]}" if len(self.models) == 1 else base

    @property
    def base_url(self) -> str:
        return f"anthropic+http://127.0.0.1:{self.port}"

    @property
    def message_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.path == "/v1/messages"]

    def _answer(self, request: Recorded) -> Error | Stream | Close | Stall:
        route = request.path.split("?", 1)[0]
        if self.discovery is not None and (request.method, route) == ("GET", "/v1/models"):
            return self.discovery  # type: ignore[return-value]
        if (request.method, route) not in (("POST", "/v1/messages"), ("GET", "/v1/models")):
            return api_error(404, "not_found_error", f"Not found: {request.method} {route}")
        if request.headers.get("x-api-key") != self.api_key:
            return api_error(401, "authentication_error", "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return api_error(400, "invalid_request_error", "anthropic-version: header is required")
        if route == "/v1/models":
            data = [
                {
                    "type": "model",
                    "id": m,
                    "display_name": m.replace("-", " ").title(),
                    "created_at": "2025-02-19T00:00:00Z",
                }
                for m in self.models
            ]
            ids = [m["id"] for m in data]
            page = {"data": data, "has_more": False, "first_id": ids[0] if ids else None}
            page["last_id"] = ids[-1] if ids else None
            return Error(200, page)
        try:
            body = json.loads(request.body)
        except ValueError:
            return api_error(400, "invalid_request_error", "Invalid JSON in request body")
        problem = validate(body)
        if problem:
            return api_error(400, "invalid_request_error", problem)
        if body["model"] not in self.models:
            return api_error(404, "not_found_error", f"model: {body['model']}")
        scripted = self._queue.popleft() if self._queue else None
        if scripted is not None and not isinstance(scripted, Reply):
            return scripted
        reply = scripted if isinstance(scripted, Reply) else computed_reply(body)
        tokens = _input_tokens(body)
        headers = {"request-id": REQUEST_ID, **reply.headers}
        if body.get("stream"):
            frames = message_events(reply, body["model"], tokens)
            return Stream(frames, headers=headers, cut=reply.cut)
        return Error(200, message_json(reply, body["model"], tokens), headers)

    async def _respond(self, conn: _Conn, request: Recorded) -> bool:
        response = self._answer(request)
        if isinstance(response, Close):
            return False
        if isinstance(response, Stall):
            await self._until_hangup(conn, None)
        if isinstance(response, Stream):
            return await self._stream(conn, response)
        assert isinstance(response, Error)
        body, ctype = response.encoded()
        head = {"Content-Type": ctype, "request-id": REQUEST_ID, **response.headers}
        if response.chunked:
            head["Transfer-Encoding"] = "chunked"
            body = _chunked(body) + b"0\r\n\r\n"
        else:
            head["Content-Length"] = str(len(body))
        await conn.write(_head(response.status, head) + body)
        return True

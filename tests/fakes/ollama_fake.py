"""A loopback fake Ollama server speaking the native API of ``shared/protocols/ollama.md``.

Raw asyncio streams on their own event loop in a background thread (as ``openai_fake.py``), so
sync and async clients alike talk to it over real sockets::

    with OllamaFake() as fake:
        fake.script(MidStreamError("runner crashed", after=2))
        client = llmrouter.Client(f"ollama://127.0.0.1:{fake.port}?model=llama3.2")

Routes: ``GET``/``HEAD /`` (``Ollama is running``), ``GET /api/tags``, ``GET /api/version``,
``POST /api/chat``; anything else is Gin's ``404 page not found``. ``/api/chat`` validates its
body the way the real server does, in the same order: JSON decode errors are 400 with Go's
message (a string where an object belongs, such as OpenAI-style tool-call ``arguments``), a
missing model 400, an unknown model 404 ``model '<name>' not found``, an empty ``messages`` list
the load answer (``done_reason: "load"``), an option of the wrong type 500, ``think`` on a model
without thinking 400, ``top_logprobs`` out of range 400.

Answers are deterministic: scripted ones first (:class:`Answer`, :class:`Reply`,
:class:`MidStreamError`, :class:`Cut`, :class:`Garbage`), otherwise an echo of the last message
(``Echo: <text>``, or ``<tool> returned: <text>`` after a tool result), cut at the first
``options.stop`` string (``done_reason: "stop"``) or after ``options.num_predict`` tokens
(``"length"``). A token is a word with its trailing space. ``format`` makes the answer JSON (an
object following the schema's properties). Thinking models (``thinking_models``) think first
unless ``think`` is false. Streams are NDJSON, one token a line, the last line ``done: true``
with ``done_reason`` and the metrics; ``stream: false`` gets one JSON object.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import http
import json
import re
from dataclasses import dataclass, field
from typing import Any

from tests.fakes._loopback import LoopbackServer

CREATED_AT = "2026-01-01T00:00:00.123456789Z"
CREATED = 1767225600  # CREATED_AT in Unix seconds
MODELS = ["llama3.2:latest", "qwen3:0.6b"]
THINKING = ["qwen3:0.6b"]
JSON_TYPE = "application/json; charset=utf-8"
TEMPLATE_TOKENS = 10  # prompt tokens the chat template adds, for prompt_eval_count

# Go types of the options a request may set (api.Options + api.Runner), for FromMap's checks.
_INT_OPTIONS = {
    "num_keep", "seed", "num_predict", "top_k", "repeat_last_n", "num_ctx", "num_batch",
    "num_gpu", "main_gpu", "num_thread", "draft_num_predict",
}  # fmt: skip
_FLOAT_OPTIONS = {
    "top_p", "min_p", "typical_p", "temperature", "repeat_penalty", "presence_penalty",
    "frequency_penalty",
}  # fmt: skip
_BOOL_OPTIONS = {"use_mmap"}
_THINK_LEVELS = ("low", "medium", "high", "max")
_DURATION = re.compile(r"^-?(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$|^0$")

# ---------------------------------------------------------------------------------------------
# Scripted answers (for POST /api/chat, in order)


@dataclass
class Answer:
    """Answer with this text (and tool calls) instead of the echo; limits still apply."""

    text: str = ""
    tool_calls: list[dict[str, Any]] | None = None  # Ollama-shaped: arguments is an object
    thinking: str | None = None


@dataclass
class Reply:
    """A plain JSON error answer: ``{"error": message}`` with ``status``."""

    status: int
    message: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class MidStreamError:
    """Stream ``after`` tokens of the answer, then an ``{"error": message}`` line, then end
    the body (no ``done`` line). A ``stream: false`` request gets a 500 with that error."""

    message: str = "an error was encountered while running the model"
    after: int = 0


@dataclass
class Cut:
    """Stream ``after`` tokens, then drop the connection without ending the body. A
    ``stream: false`` request gets no answer at all: the connection closes."""

    after: int = 0


@dataclass
class Garbage:
    """Stream ``after`` tokens, then the raw bytes ``data`` (a malformed line), then end the
    body. A ``stream: false`` request gets ``data`` as its 200 body."""

    data: bytes = b'{"model": "llama3.2", "message": {\n'
    after: int = 0


Scripted = Answer | Reply | MidStreamError | Cut | Garbage


@dataclass
class Recorded:
    """One request the fake received (header names lower-cased)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# ---------------------------------------------------------------------------------------------
# Validation, as the real server does it (api/types.go, server/routes.go)


def _go_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object", type(None): "null"}[type(value)]


def _expect(value: Any, kinds: tuple[type, ...], where: str, go_type: str) -> None:
    """Go's json.Unmarshal type check: 400 ``json: cannot unmarshal X into ...`` (null is ok)."""
    ok = value is None or (bool in kinds if isinstance(value, bool) else isinstance(value, kinds))
    if not ok:
        raise _BadRequest(
            400,
            f"json: cannot unmarshal {_go_type(value)} into Go struct field {where} "
            f"of type {go_type}",
        )


def _check_message(message: Any) -> None:
    _expect(message, (dict,), "ChatRequest.messages", "api.Message")
    if message is None:
        return
    _expect(message.get("role"), (str,), "Message.messages.role", "string")
    _expect(message.get("content"), (str,), "Message.messages.content", "string")
    _expect(message.get("thinking"), (str,), "Message.messages.thinking", "string")
    _expect(message.get("tool_name"), (str,), "Message.messages.tool_name", "string")
    images = message.get("images")
    _expect(images, (list,), "Message.messages.images", "[]api.ImageData")
    for image in images or []:
        _expect(image, (str,), "Message.messages.images", "api.ImageData")
        try:
            base64.b64decode(image, validate=True)
        except binascii.Error:
            raise _BadRequest(400, "illegal base64 data at input byte 0") from None
    calls = message.get("tool_calls")
    _expect(calls, (list,), "Message.messages.tool_calls", "[]api.ToolCall")
    for call in calls or []:
        _expect(call, (dict,), "Message.messages.tool_calls", "api.ToolCall")
        fn = call.get("function")
        _expect(fn, (dict,), "ToolCall.messages.tool_calls.function", "api.ToolCallFunction")
        fn = fn or {}
        _expect(
            fn.get("name"), (str,), "ToolCallFunction.messages.tool_calls.function.name", "string"
        )
        _expect(
            fn.get("arguments"),
            (dict,),
            "ToolCallFunction.messages.tool_calls.function.arguments",
            "api.ToolCallFunctionArguments",
        )


def _check_body(body: bytes) -> dict[str, Any]:
    """Decode errors: 400 with the message Go's decoder gives."""
    if not body:
        raise _BadRequest(400, "missing request body")
    try:
        req = json.loads(body)
    except ValueError as exc:
        raise _BadRequest(400, f"invalid character in JSON: {exc}") from None
    if not isinstance(req, dict):
        raise _BadRequest(
            400, f"json: cannot unmarshal {_go_type(req)} into Go value of type api.ChatRequest"
        )
    _expect(req.get("model"), (str,), "ChatRequest.model", "string")
    _expect(req.get("stream"), (bool,), "ChatRequest.stream", "bool")
    _expect(req.get("messages"), (list,), "ChatRequest.messages", "[]api.Message")
    for message in req.get("messages") or []:
        _check_message(message)
    _expect(req.get("options"), (dict,), "ChatRequest.options", "map[string]interface {}")
    _expect(req.get("tools"), (list,), "ChatRequest.tools", "api.Tools")
    think = req.get("think")
    if think is not None and not isinstance(think, bool) and think not in _THINK_LEVELS:
        raise _BadRequest(
            400,
            f'invalid think value: {json.dumps(think)} (must be "high", "medium", "low", '
            '"max", true, or false)',
        )
    keep_alive = req.get("keep_alive")
    if isinstance(keep_alive, str) and not _DURATION.match(keep_alive):
        raise _BadRequest(400, f'time: invalid duration "{keep_alive}"')
    fmt = req.get("format")
    if fmt is not None and fmt != "json" and not isinstance(fmt, dict) and fmt != "":
        raise _BadRequest(400, f"invalid format: {json.dumps(fmt)}")
    return req


def _check_options(options: dict[str, Any]) -> None:
    """api.Options FromMap: a wrong type fails scheduling, which Ollama reports as 500."""
    for key, value in options.items():
        if key in _INT_OPTIONS or key in _FLOAT_OPTIONS:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            kind = "integer" if key in _INT_OPTIONS else "float"
        elif key in _BOOL_OPTIONS:
            ok, kind = isinstance(value, bool), "bool"
        elif key == "stop":
            ok = isinstance(value, list) and all(isinstance(s, str) for s in value)
            kind = "array of strings"
        else:
            continue  # unknown keys: a warning in the server log, nothing more
        if not ok:
            raise _BadRequest(500, f'option "{key}" must be of type {kind}')


def full_name(model: str) -> str:
    """``name`` -> ``name:latest`` (the tag defaults to latest)."""
    return model if ":" in model.rsplit("/", 1)[-1] else model + ":latest"


# ---------------------------------------------------------------------------------------------
# Answers


def tokens(text: str) -> list[str]:
    """The fake's tokens: each word with the whitespace after it (they join back to text)."""
    return re.findall(r"\s*\S+\s*", text) if text.strip() else ([text] if text else [])


def _schema_value(schema: Any, text: str) -> Any:
    kind = schema.get("type") if isinstance(schema, dict) else None
    if kind == "object" or (isinstance(schema, dict) and "properties" in schema):
        props = schema.get("properties") or {}
        return {name: _schema_value(sub, text) for name, sub in props.items()}
    return {"integer": 0, "number": 0.5, "boolean": True, "array": [], "null": None}.get(
        str(kind), text
    )


def _echo(messages: list[dict[str, Any]]) -> str:
    last = messages[-1]
    if last.get("role", "").lower() == "tool":
        return f"{last.get('tool_name') or 'tool'} returned: {last.get('content', '')}"
    return f"Echo: {last.get('content', '')}"


def _prompt_tokens(messages: list[dict[str, Any]]) -> int:
    words = sum(len(str(m.get("content", "")).split()) for m in messages)
    return words + TEMPLATE_TOKENS + 50 * sum(len(m.get("images") or []) for m in messages)


# ---------------------------------------------------------------------------------------------
# The server


def _head(status: int, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


class OllamaFake(LoopbackServer):
    """The fake server; a context manager that runs it on a background thread.

    Args:
        models: what ``/api/tags`` lists and ``/api/chat`` serves (``name:tag``).
        thinking_models: the models with the thinking capability.
    """

    def __init__(
        self, models: list[str] | None = None, thinking_models: list[str] | None = None
    ) -> None:
        super().__init__()
        self.models = list(MODELS if models is None else models)
        self.thinking_models = list(THINKING if thinking_models is None else thinking_models)
        self.requests: list[Recorded] = []
        #: When set, how ``GET /api/tags`` fails: an error status, or ``"stall"`` (no answer).
        self.discovery: int | str | None = None
        self._queue: collections.deque[Scripted] = collections.deque()

    @property
    def url(self) -> str:
        """``ollama://127.0.0.1:PORT`` (add ``?model=...`` to pin one)."""
        return f"ollama://127.0.0.1:{self.port}"

    @property
    def chat_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.path == "/api/chat"]

    def script(self, *answers: Scripted) -> None:
        """Queue answers for the next chat requests, in order."""
        self._queue.extend(answers)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while (request := await self._read(reader)) is not None:
                self.requests.append(request)
                if not await self._respond(writer, request):
                    break
        except (ConnectionError, asyncio.CancelledError, asyncio.IncompleteReadError):
            pass

    @staticmethod
    async def _read(reader: asyncio.StreamReader) -> Recorded | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        return Recorded(method, path.split("?", 1)[0], headers, body)

    async def _send(
        self, writer: asyncio.StreamWriter, status: int, body: bytes, ctype: str, **extra: str
    ) -> bool:
        headers = {"Content-Type": ctype, "Content-Length": str(len(body)), **extra}
        writer.write(_head(status, headers) + body)
        await writer.drain()
        return True

    async def _error(
        self, writer: asyncio.StreamWriter, status: int, message: str, **extra: str
    ) -> bool:
        return await self._send(writer, status, _line({"error": message})[:-1], JSON_TYPE, **extra)

    async def _respond(self, writer: asyncio.StreamWriter, request: Recorded) -> bool:
        """Send one answer; return whether the connection stays open."""
        route = (request.method, request.path)
        if route in (("GET", "/"), ("HEAD", "/")):
            body = b"Ollama is running" if request.method == "GET" else b""
            return await self._send(writer, 200, body, "text/plain; charset=utf-8")
        if route == ("GET", "/api/tags") and self.discovery == "stall":
            await asyncio.sleep(3600)  # cancelled when the fake stops
        if route == ("GET", "/api/tags") and isinstance(self.discovery, int):
            return await self._error(writer, self.discovery, "tags are broken here")
        if route == ("GET", "/api/tags"):
            return await self._send(writer, 200, self._tags(), JSON_TYPE)
        if route == ("GET", "/api/version"):
            return await self._send(writer, 200, b'{"version":"0.12.0"}', JSON_TYPE)
        if route == ("POST", "/api/chat"):
            try:
                return await self._chat(writer, request)
            except _BadRequest as exc:
                return await self._error(writer, exc.status, exc.message)
        return await self._send(writer, 404, b"404 page not found", "text/plain")

    def _tags(self) -> bytes:
        models = [
            {
                "name": name,
                "model": name,
                "modified_at": "2025-12-31T12:00:00.5+01:00",
                "size": 2019393189,
                "digest": f"{abs(hash(name)):064x}"[:64],
                "details": {
                    "parent_model": "",
                    "format": "gguf",
                    "family": name.split(":")[0],
                    "families": [name.split(":")[0]],
                    "parameter_size": "3.2B",
                    "quantization_level": "Q4_K_M",
                },
            }
            for name in self.models
        ]
        return json.dumps({"models": models}).encode()

    async def _chat(self, writer: asyncio.StreamWriter, request: Recorded) -> bool:
        req = _check_body(request.body)
        model = req.get("model") or ""
        if not model:
            raise _BadRequest(400, "model is required")
        if full_name(model) not in self.models:
            raise _BadRequest(404, f"model '{model}' not found")
        options = req.get("options") or {}
        _check_options(options)
        stream = req.get("stream", True)  # absent means stream (ollama.md 1)
        messages = req.get("messages") or []
        thinks = full_name(model) in self.thinking_models
        if req.get("think") not in (None, False) and not thinks:
            raise _BadRequest(400, f'"{model}" does not support thinking')
        top = req.get("top_logprobs")
        if top is not None and not 0 <= top <= 20:
            raise _BadRequest(400, "top_logprobs must be between 0 and 20")
        scripted = self._queue.popleft() if self._queue and messages else None
        if isinstance(scripted, Reply):
            return await self._error(writer, scripted.status, scripted.message, **scripted.headers)
        if isinstance(scripted, MidStreamError) and not stream:
            return await self._error(writer, 500, scripted.message)
        if isinstance(scripted, Cut) and not stream:
            return False
        if isinstance(scripted, Garbage) and not stream:
            return await self._send(writer, 200, scripted.data, JSON_TYPE)
        base = {"model": model, "created_at": CREATED_AT}
        if not messages:  # load the model (ollama.md 1.4)
            unload = req.get("keep_alive") in (0, "0")
            final = {
                **base,
                "message": {"role": "assistant", "content": ""},
                "done": True,
                "done_reason": "unload" if unload else "load",
            }
            return await self._send(writer, 200, _line(final)[:-1], JSON_TYPE)
        text = _echo(messages)
        calls: list[dict[str, Any]] | None = None
        thinking = f"The user wrote {len(text.split())} words." if thinks else None
        if req.get("think") is False:
            thinking = None
        if isinstance(scripted, Answer):
            text, calls = scripted.text, scripted.tool_calls
            thinking = scripted.thinking if scripted.thinking is not None else thinking
        fmt = req.get("format")
        if fmt == "json":
            text = json.dumps({"answer": text})
        elif isinstance(fmt, dict):
            text = json.dumps(_schema_value(fmt, text))
        pieces, reason = self._limit(tokens(text), options)
        think_pieces = tokens(thinking) if thinking else []
        final = {
            **base,
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": reason,
            "total_duration": 512000000,
            "load_duration": 2100000,
            "prompt_eval_count": _prompt_tokens(messages),
            "prompt_eval_duration": 40000000,
            "eval_count": len(pieces) + len(think_pieces),
            "eval_duration": 30000000,
        }
        if not stream:
            final["message"] = {"role": "assistant", "content": "".join(pieces)}
            if think_pieces:
                final["message"]["thinking"] = "".join(think_pieces)
            if calls:
                final["message"]["tool_calls"] = calls
            return await self._send(writer, 200, _line(final)[:-1], JSON_TYPE)
        lines = [
            _line(
                {
                    **base,
                    "message": {"role": "assistant", "content": "", "thinking": t},
                    "done": False,
                }
            )
            for t in think_pieces
        ]
        lines += [
            _line({**base, "message": {"role": "assistant", "content": p}, "done": False})
            for p in pieces
        ]
        if calls:
            msg = {"role": "assistant", "content": "", "tool_calls": calls}
            lines.append(_line({**base, "message": msg, "done": False}))
        if isinstance(scripted, (MidStreamError, Cut, Garbage)):
            lines = lines[: len(think_pieces) + scripted.after]
        else:
            lines.append(_line(final))
        head = {"Content-Type": "application/x-ndjson", "Transfer-Encoding": "chunked"}
        writer.write(_head(200, head))
        for line in lines:
            writer.write(_chunk(line))
            await writer.drain()
        if isinstance(scripted, Cut):
            return False
        if isinstance(scripted, MidStreamError):
            writer.write(_chunk(_line({"error": scripted.message})))
        if isinstance(scripted, Garbage):
            writer.write(_chunk(scripted.data))
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    @staticmethod
    def _limit(pieces: list[str], options: dict[str, Any]) -> tuple[list[str], str]:
        """Apply ``stop`` (cut before the first stop string) and ``num_predict``."""
        text = "".join(pieces)
        cut = min((i for s in options.get("stop") or [] if (i := text.find(s)) >= 0), default=-1)
        if cut >= 0:
            pieces = tokens(text[:cut])
        limit = int(options.get("num_predict", -1))
        if limit >= 0 and len(pieces) > limit:
            return pieces[:limit], "length"
        return pieces, "stop"

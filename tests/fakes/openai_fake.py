"""A loopback fake OpenAI-compatible HTTP/1.1 server that can misbehave at the byte level.

Built on raw asyncio streams (not a web framework) and run on its own event loop in a background
thread, so sync and async clients alike can talk to it over real sockets::

    with OpenAIFake(models=["m"]) as fake:
        fake.script(Error(429, {"error": {"message": "slow down"}}, {"Retry-After": "2"}),
                    Stream(sse("Hel", "lo")))
        client = llmrouter.Client(fake.url)   # "http://127.0.0.1:PORT/v1"

``POST .../chat/completions`` answers the scripted responses in order, then a default
:class:`Completion` (a :class:`Stream` of "Hello!" if the body asks to stream); ``GET
.../models`` lists ``fake.models``. Every request is recorded in ``fake.requests``;
``fake.connections`` counts accepted connections and ``fake.disconnects`` counts clients that
hung up while a response was still being sent (or stalled).

``OpenAIFake(computed=True)`` behaves like a server instead (vLLM's rules, openai-chat.md 1 and
6.1): chat bodies are validated first (400 for bad JSON, a missing or ill-typed field, a ``tool``
message whose ``tool_call_id`` answers no earlier assistant tool call, ``arguments`` that are not
a JSON string, ``stream_options`` without ``stream``, ``tool_choice`` without ``tools``; 404 for
a model not in ``fake.models``, in Azure's shape on a ``/openai/deployments/`` path), scripted
answers come after that, and the default answer is computed: a forced tool call (``required`` or
a named function) with arguments sampled from its schema, JSON following a ``json_schema``
response format, else ``Echo: <last user text>`` (``Tool said: <result>`` after a tool result),
cut before the first ``stop`` string or after ``max_tokens`` / ``max_completion_tokens`` tokens
(``finish_reason: "length"``); a token is a word and the space after it. Streams send a role
chunk, one chunk per token, a finish chunk, a usage chunk when ``stream_options.include_usage``,
then ``[DONE]``. ``api_key`` (either mode) makes every request need ``Authorization: Bearer
<key>`` or Azure's ``api-key: <key>``, else 401.

Frame helpers build the shapes of ``shared/protocols/openai-chat.md`` section 3: role, content,
finish and usage-only chunks, ``: keep-alive`` comments, TGI's ``data:`` without a space, CRLF
line ends and mid-stream ``{"error": ...}`` events (vLLM / TGI).
"""

from __future__ import annotations

import asyncio
import collections
import http
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.fakes._loopback import LoopbackServer

MODEL = "fake-model"
CREATED = 1760000000
USAGE = {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}

# ---------------------------------------------------------------------------------------------
# Scripted responses


@dataclass
class Completion:
    """A normal ``200`` JSON chat completion (``extra``: more top-level fields, e.g. timings)."""

    content: str | None = "Hello!"
    finish_reason: str = "stop"
    usage: dict[str, Any] | None = field(default_factory=lambda: dict(USAGE))
    tool_calls: list[dict[str, Any]] | None = None
    model: str = MODEL
    extra: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    chunked: bool = False  # Transfer-Encoding: chunked instead of Content-Length

    def payload(self) -> dict[str, Any]:
        """The JSON object sent, exactly."""
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.tool_calls is not None:
            message["tool_calls"] = self.tool_calls
        body: dict[str, Any] = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": CREATED,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": self.finish_reason,
                }
            ],
        }
        if self.usage is not None:
            body["usage"] = self.usage
        body.update(self.extra)
        return body


@dataclass
class Stream:
    """A ``200`` SSE response made of raw ``frames`` (bytes, written as given).

    Attributes:
        delay: seconds to wait before each frame.
        split: write the wire bytes in pieces of at most this many bytes.
        chunked: ``Transfer-Encoding: chunked`` (keep-alive); else the body ends at close.
        cut: after the frames, drop the connection without ending the body properly.
        hold: after the frames, keep the connection open until the client hangs up.
    """

    frames: list[bytes]
    delay: float = 0.0
    split: int | None = None
    chunked: bool = True
    cut: bool = False
    hold: bool = False
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Error:
    """Any non-streamed answer, errors first: ``body`` is JSON-encoded unless bytes or str."""

    status: int
    body: Any = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str | None = None
    chunked: bool = False

    def encoded(self) -> tuple[bytes, str]:
        if isinstance(self.body, bytes | str):
            raw = self.body.encode() if isinstance(self.body, str) else self.body
            return raw, self.content_type or "text/plain; charset=utf-8"
        return json.dumps(self.body).encode(), self.content_type or "application/json"


@dataclass
class Close:
    """Read the request, then close the connection without any response."""


@dataclass
class Stall:
    """Read the request and never answer, until the client gives up and hangs up."""


Response = Completion | Stream | Error | Close | Stall


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


# ---------------------------------------------------------------------------------------------
# Frame helpers


def chunk(
    delta: dict[str, Any] | None = None,
    finish_reason: str | None = None,
    *,
    usage: dict[str, Any] | None = None,
    choices: list[Any] | None = None,
) -> dict[str, Any]:
    """One ``chat.completion.chunk`` object; ``choices=[]`` makes a usage-only chunk."""
    if choices is None:
        choices = [
            {"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish_reason}
        ]
    body: dict[str, Any] = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": MODEL,
        "choices": choices,
    }
    if usage is not None:
        body["usage"] = usage
    return body


def frame(data: Any, *, space: bool = True, crlf: bool = False) -> bytes:
    """One SSE event: ``data: <json or text>`` and a blank line."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    nl = "\r\n" if crlf else "\n"
    return f"data:{' ' if space else ''}{text}{nl}{nl}".encode()


def comment(text: str = "keep-alive", *, crlf: bool = False) -> bytes:
    """An SSE comment line (a keep-alive), then a blank line."""
    nl = "\r\n" if crlf else "\n"
    return f": {text}{nl}{nl}".encode()


DONE = frame("[DONE]")


def role_frame(**kw: Any) -> bytes:
    return frame(chunk({"role": "assistant", "content": ""}), **kw)


def content_frames(*texts: str, **kw: Any) -> list[bytes]:
    return [frame(chunk({"content": t}), **kw) for t in texts]


def finish_frame(reason: str = "stop", **kw: Any) -> bytes:
    return frame(chunk({}, reason), **kw)


def usage_frame(usage: dict[str, Any] | None = None, **kw: Any) -> bytes:
    return frame(chunk(choices=[], usage=usage or dict(USAGE)), **kw)


def error_frame(message: str = "engine failed", **fields: Any) -> bytes:
    """A mid-stream error event: vLLM ``code=500``; TGI ``http_status_code=422``."""
    return frame({"error": {"message": message, **fields}})


def sse(
    *texts: str,
    usage: bool = False,
    done: bool = True,
    finish: str | None = "stop",
    space: bool = True,
    crlf: bool = False,
) -> list[bytes]:
    """The frames of a realistic stream: role, one chunk per text, finish, usage, [DONE]."""
    kw = {"space": space, "crlf": crlf}
    frames = [role_frame(**kw), *content_frames(*texts, **kw)]
    if finish is not None:
        frames.append(finish_frame(finish, **kw))
    if usage:
        frames.append(usage_frame(**kw))
    if done:
        frames.append(frame("[DONE]", **kw))
    return frames


# ---------------------------------------------------------------------------------------------
# The server


class _Disconnected(Exception):
    """The client hung up in the middle of a response."""


class _Conn:
    """One accepted connection with our own read buffer (so an EOF watcher loses nothing)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.buf = reader, writer, bytearray()

    async def fill(self) -> bool:
        data = await self.reader.read(65536)
        self.buf += data
        return bool(data)

    async def read_request(self) -> Recorded | None:
        while b"\r\n\r\n" not in self.buf:
            if not await self.fill():
                return None
        head, _, rest = bytes(self.buf).partition(b"\r\n\r\n")
        self.buf = bytearray(rest)
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(self.buf) < length:
            if not await self.fill():
                return None
        body, self.buf = bytes(self.buf[:length]), self.buf[length:]
        return Recorded(method, path, headers, body)

    async def write(self, data: bytes, split: int | None = None) -> None:
        step = split or len(data) or 1
        try:
            for i in range(0, len(data), step):
                self.writer.write(data[i : i + step])
                await self.writer.drain()
        except (ConnectionError, RuntimeError) as exc:
            raise _Disconnected from exc


def _head(status: int, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data) if data else b""


class OpenAIFake(LoopbackServer):
    """The fake server; a context manager that runs it on a background thread.

    Args:
        models: the ids ``GET /v1/models`` lists (and, when ``computed``, the only ones served).
        computed: validate chat bodies and compute answers as a server would (module docstring).
        api_key: the only key accepted (401 otherwise); ``None`` checks nothing.
    """

    def __init__(
        self, models: list[str] | None = None, *, computed: bool = False, api_key: str | None = None
    ) -> None:
        super().__init__()
        self.models: list[str] = list(models) if models is not None else [MODEL]
        self.computed = computed
        self.api_key = api_key
        self.requests: list[Recorded] = []
        #: When set, the answer to every discovery request (``GET .../models``; TGI's
        #: ``/info``): a 404, a 500, a ``Stall()``, to show that discovery never blocks a chat.
        self.discovery: Response | None = None
        self.connections = 0
        self.disconnects = 0
        self._queue: collections.deque[Response] = collections.deque()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def chat_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    def script(self, *responses: Response) -> None:
        """Queue responses for the next chat requests, in order."""
        self._queue.extend(responses)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 3.0) -> bool:
        """Poll ``predicate`` (blocking) until true or ``timeout``; returns its last value."""
        for _ in range(int(timeout / 0.005)):
            if predicate():
                return True
            time.sleep(0.005)
        return predicate()

    async def async_wait_for(self, predicate: Callable[[], bool], timeout: float = 3.0) -> bool:
        """:meth:`wait_for` that lets the caller's event loop run (and close its sockets)."""
        for _ in range(int(timeout / 0.005)):
            if predicate():
                return True
            await asyncio.sleep(0.005)
        return predicate()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = _Conn(reader, writer)
        try:
            while (request := await conn.read_request()) is not None:
                self.requests.append(request)
                if not await self._respond(conn, request):
                    break
        except _Disconnected:
            self.disconnects += 1
        except (ConnectionError, asyncio.CancelledError):
            pass

    async def _respond(self, conn: _Conn, request: Recorded) -> bool:
        """Send one response; return whether the connection stays open."""
        if self.api_key is not None and not _authorized(request, self.api_key):
            response: Response = Error(401, _error_body("Incorrect API key provided", 401))
        elif self.discovery is not None and request.path.split("?")[0].endswith("/models"):
            response = self.discovery
        elif self.computed:
            response = self._computed(request)
        elif request.path.endswith("/models"):
            data = [
                {"id": m, "object": "model", "created": CREATED, "owned_by": "fake"}
                for m in self.models
            ]
            response = Error(200, {"object": "list", "data": data})
        elif self._queue:
            response = self._queue.popleft()
        elif b'"stream":true' in request.body.replace(b" ", b""):
            response = Stream(sse("Hello!"))
        else:
            response = Completion()
        if isinstance(response, Close):
            return False
        if isinstance(response, Stall):
            await self._until_hangup(conn, None)
        if isinstance(response, Stream):
            return await self._stream(conn, response)
        if isinstance(response, Completion):
            response = Error(200, response.payload(), response.headers, chunked=response.chunked)
        body, ctype = response.encoded()
        head = {"Content-Type": ctype, **response.headers}
        if response.chunked:
            head["Transfer-Encoding"] = "chunked"
            body = _chunked(body) + b"0\r\n\r\n"
        else:
            head["Content-Length"] = str(len(body))
        await conn.write(_head(response.status, head) + body)
        return True

    def _computed(self, request: Recorded) -> Response:
        """``computed=True``: route, validate, then a scripted or a computed answer."""
        path = request.path.split("?", 1)[0]
        if request.method == "GET" and path.endswith("/models"):
            data = [
                {"id": m, "object": "model", "created": CREATED, "owned_by": "fake"}
                for m in self.models
            ]
            return Error(200, {"object": "list", "data": data})
        if request.method != "POST" or not path.endswith("/chat/completions"):
            return Error(404, _error_body(f"Not Found: {path}", 404, "NotFoundError"))
        try:
            body = json.loads(request.body)
        except ValueError:
            return Error(400, _error_body("Invalid JSON in the request body", 400))
        problem = validate_chat(body)
        if problem:
            return Error(400, _error_body(problem, 400))
        if body["model"] not in self.models:
            if "/openai/deployments/" in path:  # Azure
                message = "The API deployment for this resource does not exist."
                return Error(404, {"error": {"code": "DeploymentNotFound", "message": message}})
            message = f"The model `{body['model']}` does not exist."
            return Error(404, _error_body(message, 404, "NotFoundError", "model"))
        if self._queue:
            return self._queue.popleft()
        return computed_answer(body)

    async def _stream(self, conn: _Conn, response: Stream) -> bool:
        head = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        if response.chunked:
            head["Transfer-Encoding"] = "chunked"
        else:
            head["Connection"] = "close"
        await conn.write(_head(200, {**head, **response.headers}))
        hangup = asyncio.ensure_future(self._watch(conn))
        try:
            for data in response.frames:
                if response.delay:
                    await asyncio.wait({hangup}, timeout=response.delay)
                if hangup.done():
                    raise _Disconnected
                await conn.write(_chunked(data) if response.chunked else data, response.split)
            if response.hold:
                await self._until_hangup(conn, hangup)
            if response.cut or not response.chunked:
                return False
            await conn.write(b"0\r\n\r\n")
            return True
        finally:
            hangup.cancel()
            await asyncio.wait({hangup})  # let it let go of the reader before the next request

    @staticmethod
    async def _watch(conn: _Conn) -> None:
        """Returns when the client hangs up (anything it sends meanwhile stays buffered)."""
        try:
            while await conn.fill():
                pass
        except ConnectionError:
            pass

    async def _until_hangup(self, conn: _Conn, hangup: asyncio.Future[None] | None) -> None:
        await (hangup or self._watch(conn))
        raise _Disconnected


# ---------------------------------------------------------------------------------------------
# computed=True: validation and answers


def _error_body(
    message: str, code: int, type: str = "BadRequestError", param: str | None = None
) -> dict[str, Any]:
    """vLLM's error object (``code`` is the integer status, openai-chat.md 6.1)."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def _authorized(request: Recorded, key: str) -> bool:
    given = request.headers.get("api-key") or request.headers.get("authorization", "")
    return given in (key, f"Bearer {key}")


def _fn_name(choice: Any) -> str | None:
    return choice.get("function", {}).get("name") if isinstance(choice, dict) else None


def validate_chat(body: Any) -> str | None:
    """The message of the 400 the server would answer, or ``None`` for a valid body."""
    if not isinstance(body, dict):
        return "Input should be a valid dictionary"
    if not isinstance(body.get("model"), str):
        return "model: Field required"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: List should have at least 1 item"
    call_ids: set[str] = set()
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("system", "developer", "user", "assistant", "tool"):
            return f"messages[{i}].role: Input tag {role!r} does not match any expected tag"
        content = message.get("content")
        if not isinstance(content, str | list) and not (role == "assistant" and content is None):
            return f"messages[{i}].content: Input should be a valid string or list"
        for j, call in enumerate(message.get("tool_calls") or []):
            fn = call.get("function") if isinstance(call, dict) else None
            if (
                role != "assistant"
                or not isinstance(fn, dict)
                or not isinstance(call.get("id"), str)
            ):
                return f"messages[{i}].tool_calls[{j}]: invalid tool call"
            if not isinstance(fn.get("arguments"), str):
                return (
                    f"Invalid type for 'messages[{i}].tool_calls[{j}].function.arguments': "
                    "expected a string"
                )
            call_ids.add(call["id"])
        if role == "tool" and message.get("tool_call_id") not in call_ids:
            return (
                f"messages[{i}]: a 'tool' message must answer a preceding assistant tool call "
                "(tool_call_id)"
            )
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 1
        ):
            return f"{name}: Input should be greater than or equal to 1"
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop
    if stop is not None and (
        not isinstance(stops, list) or not all(isinstance(s, str) for s in stops)
    ):
        return "stop: Input should be a valid string or list of strings"
    if body.get("stream_options") is not None and not body.get("stream"):
        return "The 'stream_options' parameter is only allowed when 'stream' is enabled."
    tools = body.get("tools")
    names = []
    for i, tool in enumerate(tools or []):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if tool.get("type") != "function" or not isinstance(fn, dict) or not fn.get("name"):
            return f"tools[{i}]: a function tool needs type 'function' and function.name"
        names.append(fn["name"])
    choice = body.get("tool_choice")
    if choice is not None:
        if not names and choice != "none":
            return "'tool_choice' is only allowed when 'tools' are specified"
        if choice not in ("none", "auto", "required") and _fn_name(choice) not in names:
            return f"tool_choice: no tool named {_fn_name(choice)!r}"
    fmt = body.get("response_format")
    if fmt is not None:
        kind = fmt.get("type") if isinstance(fmt, dict) else None
        if kind not in ("text", "json_object", "json_schema"):
            return f"response_format.type: Input tag {kind!r} does not match any expected tag"
        spec = fmt.get("json_schema")
        if kind == "json_schema" and (not isinstance(spec, dict) or not spec.get("name")):
            return "response_format.json_schema.name: Field required"
    return None


def _sample(schema: Any, name: str) -> Any:
    """A deterministic value following a (simple) JSON schema."""
    if not isinstance(schema, dict):
        return f"fake {name}"
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if kind == "object":
        props = schema.get("properties") or {}
        return {key: _sample(sub, key) for key, sub in props.items()}
    if kind == "array":
        return [_sample(schema.get("items"), name)]
    return {"integer": 1, "number": 1.5, "boolean": True, "null": None}.get(kind, f"fake {name}")


def _text_of(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content or ""


def computed_answer(body: dict[str, Any]) -> Response:
    """The computed answer to a valid chat body (the module docstring says which)."""
    messages = body["messages"]
    prompt = sum(len(_text_of(m.get("content")).split()) + 1 for m in messages)
    tools = {t["function"]["name"]: t["function"] for t in body.get("tools") or []}
    choice = body.get("tool_choice")
    if tools and (choice == "required" or _fn_name(choice)):
        fn = tools[_fn_name(choice) or next(iter(tools))]
        arguments = json.dumps(_sample(fn.get("parameters") or {}, fn["name"]))
        call = {"id": "call_fake0", "type": "function"}
        call["function"] = {"name": fn["name"], "arguments": arguments}
        usage = {"prompt_tokens": prompt, "completion_tokens": 5, "total_tokens": prompt + 5}
        if not body.get("stream"):
            return Completion(None, "tool_calls", usage, [call], model=body["model"])
        half = len(arguments) // 2
        first = {**call, "index": 0, "function": {"name": fn["name"], "arguments": ""}}
        parts = [arguments[:half], arguments[half:]]
        deltas = [first, *({"index": 0, "function": {"arguments": p}} for p in parts)]
        frames = [role_frame(), *(frame(chunk({"tool_calls": [d]})) for d in deltas)]
        return _streamed(body, frames, "tool_calls", usage)
    fmt = body.get("response_format") or {}
    last = messages[-1]
    if fmt.get("type") == "json_schema":
        text = json.dumps(_sample(fmt["json_schema"].get("schema") or {}, "value"))
    elif last["role"] == "tool":
        text = "Tool said: " + _text_of(last.get("content"))
    else:
        text = "Echo: " + _text_of(last.get("content"))
    if fmt.get("type") == "json_object":
        text = json.dumps({"answer": text})
    stop = body.get("stop")
    cuts = [
        i for s in ([stop] if isinstance(stop, str) else stop or []) if (i := text.find(s)) >= 0
    ]
    if cuts:
        text = text[: min(cuts)]
    pieces = re.findall(r"\S+\s*|\s+", text)
    finish = "stop"
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if limit is not None and len(pieces) > limit:
        pieces, finish = pieces[:limit], "length"
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": len(pieces),
        "total_tokens": prompt + len(pieces),
    }
    if not body.get("stream"):
        return Completion("".join(pieces), finish, usage, model=body["model"])
    return _streamed(body, [role_frame(), *content_frames(*pieces)], finish, usage)


def _streamed(
    body: dict[str, Any], frames: list[bytes], finish: str, usage: dict[str, Any]
) -> Stream:
    frames = [*frames, finish_frame(finish)]
    if (body.get("stream_options") or {}).get("include_usage"):
        frames.append(usage_frame(usage))
    return Stream([*frames, DONE])

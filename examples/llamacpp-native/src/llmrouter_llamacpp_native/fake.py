"""A loopback fake of llama.cpp's completion route, and its conformance adapter (tests only).

:class:`LlamaCompletionFake` is built on :class:`llmrouter.testing.LoopbackServer`: a real
socket that answers ``POST /v1/completions`` and ``GET /v1/models`` in the server's wire format
(see ``backend.py``), computing a deterministic answer that honours ``max_tokens`` and ``stop``,
or sending what a test scripted: an error, raw SSE frames, a dropped connection.
:class:`LlamaCompletionAdapter` drives it through :mod:`llmrouter.testing.conformance`::

    class TestLlamacppNative(ConformanceSuite):
        adapters = {"llamacpp-native": start_fake}

Imports pytest (through the kit): for tests, never imported by the backend.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

from llmrouter.testing import LoopbackServer, status_response
from llmrouter.testing.conformance import GARBAGE, Adapter
from llmrouter_llamacpp_native.backend import TEMPLATES

__all__ = [
    "Close",
    "Frames",
    "LlamaCompletionAdapter",
    "LlamaCompletionFake",
    "Reply",
    "start_fake",
]

KEY = "llama-conformance-key-0123"
MODEL = "SmolLM2-135M-Instruct.Q4_1.gguf"
ANSWER = ["Hello", " from", " the", " fake", " llama", " server", " today", "."]


@dataclass(frozen=True)
class Reply:
    """A whole answer: status, JSON body (or raw bytes), headers."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Frames:
    """A 200 SSE stream of these raw events; ``cut``: drop the connection after them."""

    events: list[bytes]
    cut: bool = False


@dataclass(frozen=True)
class Close:
    """Read the request, close without an answer."""


@dataclass
class Received:
    """One request the fake received."""

    method: str
    path: str
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


def event(data: Any) -> bytes:
    """One SSE event (``data: {...}``)."""
    return b"data: " + json.dumps(data).encode() + b"\n\n"


def completion_event(text: str, finish: str | None = None) -> bytes:
    """One streamed ``text_completion`` event."""
    choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}
    return event(
        {
            "id": "cmpl-fake",
            "object": "text_completion",
            "created": 1700000000,
            "model": MODEL,
            "choices": [choice],
        }
    )


DONE = b"data: [DONE]\n\n"


def error_body(status: int, message: str) -> dict[str, Any]:
    """llama.cpp's error object."""
    return {"error": {"code": status, "message": message, "type": "invalid_request_error"}}


def compute(body: dict[str, Any]) -> tuple[list[str], str, int]:
    """The answer's tokens, its finish reason and its prompt size, honouring max_tokens/stop."""
    limit = body.get("max_tokens")
    tokens = ANSWER if limit is None else ANSWER[: int(limit)]
    finish = "stop" if limit is None or int(limit) >= len(ANSWER) else "length"
    text = "".join(tokens)
    cuts = [text.index(s) for s in body.get("stop") or [] if s and s in text]
    if cuts:
        cut, kept, used = min(cuts), [], 0
        for token in tokens:
            if used + len(token) > cut:
                kept.append(token[: cut - used])
                break
            kept.append(token)
            used += len(token)
        tokens, finish = [t for t in kept if t], "stop"
    return tokens, finish, len(str(body.get("prompt", "")).split())


class LlamaCompletionFake(LoopbackServer):
    """``with LlamaCompletionFake() as fake: ... fake.port ...``; ``fake.script(answer)``."""

    def __init__(self, api_key: str | None = None) -> None:
        super().__init__()
        self.api_key = api_key
        self.requests: list[Received] = []
        self._queue: deque[Reply | Frames | Close] = deque()

    @property
    def chat_requests(self) -> list[Received]:
        """The completion requests received, in order."""
        return [r for r in self.requests if r.path == "/v1/completions"]

    def script(self, *answers: Reply | Frames | Close) -> None:
        """Queue answers for the next completion requests."""
        self._queue.extend(answers)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        request_line, *lines = head.decode("latin-1").split("\r\n")
        method, path, _ = request_line.split(" ", 2)
        length, authorization = 0, ""
        for line in lines:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
            if name.strip().lower() == "authorization":
                authorization = value.strip()
        body = await reader.readexactly(length) if length else b""
        received = Received(method, path, body)
        self.requests.append(received)
        if self.api_key is not None and authorization != f"Bearer {self.api_key}":
            # llama-server --api-key
            unauthorized = json.dumps(error_body(401, "Invalid API Key")).encode()
            writer.write(status_response(401, unauthorized, {}))
        elif path == "/v1/models":
            models = {"object": "list", "data": [{"id": MODEL, "object": "model"}]}
            writer.write(status_response(200, json.dumps(models).encode(), {}))
        elif path != "/v1/completions":
            writer.write(
                status_response(404, json.dumps(error_body(404, "not found")).encode(), {})
            )
        else:
            await self._complete(received, writer)
        await writer.drain()

    async def _complete(self, received: Received, writer: asyncio.StreamWriter) -> None:
        answer = self._queue.popleft() if self._queue else None
        request = received.json
        if isinstance(answer, Close):
            return
        if isinstance(answer, Reply):
            raw = (
                answer.body if isinstance(answer.body, bytes) else json.dumps(answer.body).encode()
            )
            writer.write(status_response(answer.status, raw, answer.headers))
            return
        if answer is None:
            tokens, finish, prompt = compute(request)
            if request.get("stream"):
                events = [completion_event(t) for t in tokens]
                answer = Frames([*events, completion_event("", finish), DONE])
            else:
                usage = {
                    "prompt_tokens": prompt,
                    "completion_tokens": len(tokens),
                    "total_tokens": prompt + len(tokens),
                }
                choice = {"text": "".join(tokens), "index": 0, "finish_reason": finish}
                payload = {
                    "id": "cmpl-fake",
                    "object": "text_completion",
                    "created": 1700000000,
                    "model": MODEL,
                    "choices": [{**choice, "logprobs": None}],
                    "usage": usage,
                }
                writer.write(status_response(200, json.dumps(payload).encode(), {}))
                return
        head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
        writer.write(head.encode() + b"".join(answer.events))
        await writer.drain()
        if answer.cut:
            writer.transport.abort()


_TURN = re.compile(r"<\|im_start\|>(\w+)\n(.*?)<\|im_end\|>\n", re.DOTALL)


class LlamaCompletionAdapter(Adapter):
    """The fake through the conformance suite's eyes (prompts rendered in ChatML)."""

    name = "llamacpp-native"
    fake: LlamaCompletionFake
    env: ClassVar[dict[str, str]] = {"LLAMA_API_KEY": KEY}
    wrong_key_env: ClassVar[dict[str, str] | None] = {"LLAMA_API_KEY": "wrong-key-000"}

    def url_at(self, port: int) -> str:
        return f"llamacpp-native://127.0.0.1:{port}?model={MODEL}"

    def _turns(self, body: dict[str, Any]) -> list[tuple[str, str]]:
        prompt = str(body["prompt"])
        assert prompt.endswith(TEMPLATES["chatml"].opening), prompt
        assert TEMPLATES["chatml"].end in body["stop"]
        return [(role, text) for role, text in _TURN.findall(prompt)]

    def system_of(self, body: dict[str, Any]) -> str | None:
        system = [text for role, text in self._turns(body) if role == "system"]
        return system[0] if system else None

    def turns_of(self, body: dict[str, Any]) -> list[tuple[str, str]]:
        return [(role, text) for role, text in self._turns(body) if role != "system"]

    def errors(self) -> dict[str, Any]:
        return {
            "400": Reply(400, error_body(400, "'prompt' must be a string")),
            "422": Reply(422, error_body(422, "invalid grammar")),
            "401": Reply(401, error_body(401, "Invalid API Key")),  # llama-server --api-key
            "404": Reply(404, error_body(404, "File Not Found")),
            "429": Reply(429, error_body(429, "busy"), {"Retry-After": "7"}),
            "5xx": Reply(503, error_body(503, "Loading model")),
        }

    def script_tool_call(self, name: str, arguments: dict[str, Any], *, stream: bool) -> None:
        raise NotImplementedError("llamacpp-native:// declares tools=False")

    def script_mid_stream_error(self) -> str:
        error = event(error_body(500, "llama_decode failed"))
        self.script(Frames([completion_event("Hel"), completion_event("lo"), error, DONE]))
        return "Hello"

    def script_malformed(self, *, stream: bool, after_content: bool) -> str:
        if not stream:
            self.script(Reply(200, GARBAGE))
            return ""
        content = [completion_event("Hel"), completion_event("lo")] if after_content else []
        self.script(Frames([*content, b"data: " + GARBAGE + b"\n\n", DONE]))
        return "Hello" if after_content else ""

    def script_close(self) -> None:
        self.script(Close())

    def script_cut_after_content(self) -> str:
        self.script(Frames([completion_event("Hel"), completion_event("lo")], cut=True))
        return "Hello"


@contextmanager
def start_fake() -> Iterator[LlamaCompletionAdapter]:
    """A started fake and its adapter (an :data:`llmrouter.testing.conformance.AdapterFactory`)."""
    with LlamaCompletionFake(api_key=KEY) as fake:
        yield LlamaCompletionAdapter(fake)

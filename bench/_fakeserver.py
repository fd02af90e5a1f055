"""A minimal, fast OpenAI-compatible fake server for the overhead benchmark (raw asyncio).

Run as a separate process so its CPU time never counts against the client being measured::

    python bench/_fakeserver.py [--port 0] [--cpu 1]

It prints ``PORT <n>`` on stdout once it listens, and serves, over HTTP/1.1 keep-alive:

* ``POST /v1/chat/completions`` with ``"stream": false``: one small ``chat.completion`` JSON
  body (``Content-Length``);
* the same with ``"stream": true``: ``N`` chunks, each ``data: {chat.completion.chunk}\\n\\n``
  sent as its own HTTP chunk (``Transfer-Encoding: chunked``, the way real servers frame SSE),
  then ``data: [DONE]\\n\\n``. ``N`` is the ``X-Bench-Chunks`` request header if present, else
  the body's ``max_tokens``, else 16. The first chunk carries ``role``, the last one
  ``finish_reason: "stop"``;
* ``GET /v1/models``: a one-model list;
* ``POST /v1/embeddings``: one 384-float vector per input (``input`` a string or a list), in
  the openai ``CreateEmbeddingResponse`` shape, built once per input count and cached;
* anything else: 404.

Responses are built once per ``N`` and cached, and each is written with a single
``transport.write``, so the server costs a few microseconds per request and is not the
bottleneck of a client benchmark (``bench/overhead.py`` checks that by reading this process's
CPU time from ``/proc``). It parses only what it needs: the request line, ``Content-Length``,
``Connection`` and ``X-Bench-Chunks``; request bodies must have a ``Content-Length``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys

MODEL = "m"
CREATED = 1_700_000_000

_COMPLETION = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": CREATED,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello there, how can I help?"},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 8, "total_tokens": 17},
        "system_fingerprint": None,
    },
    separators=(",", ":"),
).encode()

_MODELS = json.dumps(
    {"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "me"}]},
    separators=(",", ":"),
).encode()


def _json_response(body: bytes, status: bytes = b"200 OK") -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


def _chunk(index: int, n: int) -> bytes:
    delta: dict[str, str] = {"content": " tok"}
    if index == 0:
        delta["role"] = "assistant"
    finish = None
    if index == n - 1 and n > 1:
        delta = {}
        finish = "stop"
    data = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": MODEL,
        "system_fingerprint": None,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


def _http_chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


_STREAMS: dict[int, bytes] = {}
_SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)


def stream_response(n: int) -> bytes:
    """The whole SSE response for ``n`` chunks (cached)."""
    cached = _STREAMS.get(n)
    if cached is None:
        parts = [_SSE_HEAD]
        parts.extend(_http_chunk(_chunk(i, n)) for i in range(n))
        parts.append(_http_chunk(b"data: [DONE]\n\n"))
        parts.append(b"0\r\n\r\n")
        cached = _STREAMS[n] = b"".join(parts)
    return cached


_COMPLETION_RESPONSE = _json_response(_COMPLETION)
_MODELS_RESPONSE = _json_response(_MODELS)
EMBED_DIM = 384
_VECTOR = [round(((i * 37) % 101) / 101 - 0.5, 6) for i in range(EMBED_DIM)]
_EMBEDDINGS: dict[int, bytes] = {}


def embeddings_response(n: int) -> bytes:
    """The cached answer for ``n`` inputs."""
    cached = _EMBEDDINGS.get(n)
    if cached is None:
        body = {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": _VECTOR} for i in range(n)],
            "model": MODEL,
            "usage": {"prompt_tokens": 4 * n, "total_tokens": 4 * n},
        }
        cached = _EMBEDDINGS[n] = _json_response(json.dumps(body).encode())
    return cached


_NOT_FOUND = _json_response(b'{"error":{"message":"not found","code":404}}', b"404 Not Found")
_BAD_REQUEST = _json_response(b'{"error":{"message":"bad request","code":400}}', b"400 Bad Request")


class _Protocol(asyncio.Protocol):
    __slots__ = ("_buffer", "_transport")

    def __init__(self) -> None:
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            lines = buffer[:end].split(b"\r\n")
            length = 0
            chunks = None
            close = False
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"x-bench-chunks":
                    chunks = int(value)
                elif name == b"connection":
                    close = value.strip().lower() == b"close"
            start = end + 4
            if len(buffer) < start + length:
                break
            body = buffer[start : start + length]
            buffer = buffer[start + length :]
            self._respond(lines[0], body, chunks, close)
        self._buffer = buffer

    def _respond(self, request_line: bytes, body: bytes, chunks: int | None, close: bool) -> None:
        transport = self._transport
        if transport is None:
            return
        method, _, rest = request_line.partition(b" ")
        path = rest.partition(b" ")[0].partition(b"?")[0]
        if method == b"POST" and path.endswith(b"/chat/completions"):
            try:
                payload = json.loads(body)
            except ValueError:
                transport.write(_BAD_REQUEST)
            else:
                if payload.get("stream"):
                    n = chunks or payload.get("max_tokens") or 16
                    transport.write(stream_response(max(int(n), 1)))
                else:
                    transport.write(_COMPLETION_RESPONSE)
        elif method == b"POST" and path.endswith(b"/embeddings"):
            try:
                given = json.loads(body)["input"]
            except (ValueError, KeyError, TypeError):
                transport.write(_BAD_REQUEST)
            else:
                transport.write(embeddings_response(len(given) if isinstance(given, list) else 1))
        elif method == b"GET" and path.endswith(b"/models"):
            transport.write(_MODELS_RESPONSE)
        else:
            transport.write(_NOT_FOUND)
        if close:
            transport.close()


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Protocol, host, port, backlog=4096, reuse_address=True)
    bound = server.sockets[0].getsockname()[1]
    sys.stdout.write(f"PORT {bound}\n")
    sys.stdout.flush()
    async with server:
        await server.serve_forever()


def spawn_port_process(cmd: list[str]) -> tuple[subprocess.Popen[str], int]:
    """Start a child that prints ``PORT <n>`` once listening; return it and the port."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("PORT "):
        proc.kill()
        raise RuntimeError(f"server did not start: {line!r}")
    return proc, int(line.split()[1])


def pin(cpu: int | None) -> None:
    """Pin this process to one CPU when the platform allows and the CPU exists."""
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return
    if cpu in os.sched_getaffinity(0):
        os.sched_setaffinity(0, {cpu})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cpu", type=int, default=None, help="pin the server to this CPU")
    args = parser.parse_args()
    pin(args.cpu)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()

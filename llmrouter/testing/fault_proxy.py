"""A loopback fault-injection proxy: sits in front of a real backend and misbehaves on cue.

Each accepted connection carries one request and takes the next scripted :class:`Fault`
(``proxy.script(...)``; when the script is empty, connections pass through). Kinds:

* ``pass``        forward to the upstream server untouched;
* ``reset``       reset the connection (RST) as soon as the request arrives;
* ``blackhole``   accept, read the request, never answer;
* ``delay``       forward, but hold the first response byte for ``seconds``;
* ``reset_after`` forward ``after`` response bytes, then reset;
* ``stall_after`` forward ``after`` response bytes, then go silent (connection kept open);
* ``close_after`` forward ``after`` response bytes, then close cleanly (FIN);
* ``respond``     answer ``status`` with ``headers`` and ``body`` without calling upstream;
* ``raw``         send ``body`` as the whole raw response (malformed SSE, truncated JSON...);
* ``drop_done``   forward the response but cut it, cleanly, just before ``data: [DONE]``.

Every connection is counted (``proxy.connections``) with the fault it got (``proxy.served``).
A "refused" backend needs no proxy: use a closed port (:func:`llmrouter.testing.free_port`).
Part of :mod:`llmrouter.testing`, the kit for backend authors (``docs/plugins.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Fault", "FaultProxy", "status_response"]


@dataclass(frozen=True)
class Fault:
    """What the proxy does to one connection (see the module docstring for the kinds)."""

    kind: str = "pass"
    seconds: float = 0.0
    after: int = 0
    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


def status_response(status: int, body: bytes, headers: dict[str, str]) -> bytes:
    """A whole HTTP/1.1 response (``Connection: close``; JSON unless ``headers`` say)."""
    lines = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if not any(k.lower() == "content-type" for k in headers):
        lines.append("Content-Type: application/json")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _rst(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _read_request(reader: asyncio.StreamReader) -> bytes | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    body = await reader.readexactly(length) if length else b""
    # One request per connection: ask upstream to close, so the client does not reuse it.
    lines = [ln for ln in head.split(b"\r\n") if not ln.lower().startswith(b"connection:")]
    return b"\r\n".join(lines[:-2]) + b"\r\nConnection: close\r\n\r\n" + body


class FaultProxy:
    """Run with ``with FaultProxy(upstream_port) as proxy: ... proxy.url ...``."""

    def __init__(self, upstream_port: int = 0, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.connections = 0
        self.served: list[str] = []
        self._script: deque[Fault] = deque()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        """The proxy as an OpenAI-compatible base URL (``http://127.0.0.1:PORT/v1``)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, *faults: Fault | str) -> None:
        """Queue faults for the next connections, in order."""
        for fault in faults:
            self._script.append(Fault(fault) if isinstance(fault, str) else fault)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        future.result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # a client gone, or the proxy shutting down
        finally:
            self._tasks.discard(task)
            writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        fault = self._script.popleft() if self._script else Fault()
        self.served.append(fault.kind)
        request = await _read_request(reader)
        if request is None:
            return
        if fault.kind == "reset":
            _rst(writer)
            return
        if fault.kind == "blackhole":
            await asyncio.sleep(3600)
        if fault.kind in ("respond", "raw"):
            data = (
                fault.body
                if fault.kind == "raw"
                else status_response(fault.status, fault.body, fault.headers)
            )
            writer.write(data)
            await writer.drain()
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        try:
            up_writer.write(request)
            await up_writer.drain()
            await self._pipe(fault, up_reader, writer)
        finally:
            up_writer.transport.abort()

    async def _pipe(
        self, fault: Fault, upstream: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        sent = 0
        first = True
        pending = b""
        while True:
            data = await upstream.read(65536)
            if not data:
                break
            if first and fault.kind == "delay":
                await asyncio.sleep(fault.seconds)
            first = False
            cutting = fault.kind in ("reset_after", "stall_after", "close_after")
            if cutting and sent + len(data) >= fault.after:
                writer.write(data[: fault.after - sent])
                await writer.drain()
                if fault.kind == "close_after":
                    writer.close()
                    return
                if fault.kind == "reset_after":
                    # Let the client read what was sent: an RST discards unread data.
                    await asyncio.sleep(0.2)
                    _rst(writer)
                    return
                await asyncio.sleep(3600)
            if fault.kind == "drop_done":
                pending += data
                cut = pending.find(b"data: [DONE]")
                if cut == -1:
                    cut = pending.find(b"data:[DONE]")
                if cut != -1:
                    writer.write(pending[:cut])
                    await writer.drain()
                    writer.close()  # a clean close (FIN), just before [DONE]
                    return
                keep = max(len(pending) - 16, 0)
                writer.write(pending[:keep])
                pending = pending[keep:]
            else:
                writer.write(data)
            sent += len(data)
            await writer.drain()
        if pending:
            writer.write(pending)
        await writer.drain()
        writer.close()

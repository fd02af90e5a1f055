"""The one piece every loopback fake shares: a TCP server on 127.0.0.1 with its own event loop
in a daemon thread, started and stopped as a context manager, its connections tracked so that
stopping cancels them. A fake writes ``serve(reader, writer)`` for one connection::

    class MyFake(LoopbackServer):
        async def serve(self, reader, writer):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
            await writer.drain()

    with MyFake() as fake:
        client = llmrouter.Client(f"myscheme+http://127.0.0.1:{fake.port}")

Part of :mod:`llmrouter.testing`, the kit for backend authors (``docs/plugins.md``).
"""

from __future__ import annotations

import abc
import asyncio
import threading

from typing_extensions import Self

__all__ = ["LoopbackServer"]


class LoopbackServer(abc.ABC):
    """A loopback server: run with ``with Fake() as fake: ... fake.port ...``.

    Attributes:
        port: the port it listens on (127.0.0.1), set once started.
    """

    def __init__(self) -> None:
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @abc.abstractmethod
    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Handle one connection (the writer is closed afterwards)."""

    def __enter__(self) -> Self:
        self._thread.start()
        start = asyncio.start_server(self._handle, "127.0.0.1", 0)
        self._server = asyncio.run_coroutine_threadsafe(start, self._loop).result(5)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self.serve(reader, writer)
        finally:
            writer.close()
            self._tasks.discard(task)

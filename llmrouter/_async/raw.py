"""``chat.completions.with_raw_response`` and ``with_streaming_response``, as in the openai SDK.

What they show is the HTTP exchange of the attempt that served the call: its status, its
headers and, for a plain call, the body exactly as the server sent it. A call that failed over
shows the backend that answered, not the ones that failed (those are in ``route``). An
in-process backend (``local://``, ``vllm+local://``) has no HTTP exchange: ``status_code`` is
200 and ``headers`` are empty, and ``content`` is the response's JSON.

For a streamed call the body is not kept: ``parse()`` gives the :class:`AsyncStream`, and
``with_streaming_response``'s line iterators give the stream as OpenAI's server-sent events,
serialised from the parsed chunks (the same events an OpenAI-compatible server sends; the bytes
may differ in spacing). ``docs/migrating.md`` lists what differs from the SDK.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from types import TracebackType
from typing import Any

from llmrouter._async.stream import AsyncStream
from llmrouter.types import ChatCompletion, exchange_of

__all__ = ["AsyncRawResponse", "AsyncStreamedResponse", "Headers"]


class Headers(Mapping[str, str]):
    """Response headers, looked up without regard to case (as httpx's)."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, str] | None = None) -> None:
        self._items = {k.lower(): v for k, v in (items or {}).items()}

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


def _exchange(value: ChatCompletion | AsyncStream) -> tuple[int, Headers, bytes | None]:
    if isinstance(value, AsyncStream):
        found = value.http_exchange()
        status, headers = found if found is not None else (200, {})
        return status, Headers(headers), None
    recorded = exchange_of(value)
    if recorded is None:  # served in process
        return 200, Headers(), value.model_dump_json(exclude_unset=True).encode()
    status, headers, body = recorded
    return status, Headers(headers), body


class AsyncRawResponse:
    """What ``with_raw_response.create(...)`` returns (the SDK's ``LegacyAPIResponse``).

    Attributes:
        status_code: the HTTP status of the attempt that served.
        headers: its response headers (case-insensitive).
        retries_taken: attempts before the one that served (retries and failovers).
    """

    def __init__(self, value: ChatCompletion | AsyncStream) -> None:
        self._value = value
        self.status_code, self.headers, self._body = _exchange(value)
        self.retries_taken = max(len(value.route.attempts) - 1, 0)

    @property
    def request_id(self) -> str | None:
        """The server's ``x-request-id`` header, when sent."""
        return self.headers.get("x-request-id")

    @property
    def content(self) -> bytes:
        """The body as the server sent it (not for a stream: iterate ``parse()``)."""
        if self._body is None:
            raise TypeError(
                "a streamed response's body is not kept: iterate parse(), or use "
                "with_streaming_response to read its lines"
            )
        return self._body

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)

    def parse(self) -> Any:
        """The :class:`ChatCompletion` (or :class:`AsyncStream`), as ``create`` returns it."""
        return self._value

    def __repr__(self) -> str:
        return f"<{type(self).__name__} [{self.status_code}] type={type(self._value).__name__}>"


class AsyncStreamedResponse(AsyncRawResponse):
    """What ``with_streaming_response.create(...)`` enters (the SDK's ``APIResponse``).

    ``text()``, ``json()`` and ``read()`` are methods here, as in the SDK; the iterators give
    the body (a plain call) or the stream's events (see the module docstring).
    """

    async def read(self) -> bytes:
        if self._body is not None:
            return self._body
        return b"".join([line.encode() + b"\n" async for line in self.iter_lines()])

    async def text(self) -> str:  # type: ignore[override]
        return (await self.read()).decode("utf-8", "replace")

    async def json(self) -> Any:
        return json.loads(await self.read())

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        if self._body is not None:
            yield self._body
            return
        async for line in self.iter_lines():
            yield line.encode() + b"\n"

    async def iter_text(self) -> AsyncIterator[str]:
        async for chunk in self.iter_bytes():
            yield chunk.decode("utf-8", "replace")

    async def iter_lines(self) -> AsyncIterator[str]:
        if self._body is not None:
            for line in self._body.decode("utf-8", "replace").splitlines():
                yield line
            return
        stream = self._value
        assert isinstance(stream, AsyncStream)
        async for chunk in stream:
            yield "data: " + chunk.model_dump_json(exclude_unset=True)
            yield ""
        yield "data: [DONE]"
        yield ""

    async def close(self) -> None:
        if isinstance(self._value, AsyncStream):
            await self._value.aclose()


class _Entered:
    """The context manager ``with_streaming_response.create`` returns."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self._call = call
        self._response: AsyncStreamedResponse | None = None

    async def __aenter__(self) -> AsyncStreamedResponse:
        self._response = AsyncStreamedResponse(await self._call())
        return self._response

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._response is not None:
            await self._response.close()


def entered(call: Callable[[], Any]) -> _Entered:
    return _Entered(call)

"""The HTTP transport seam: the only module that imports an HTTP library.

One small interface, two implementations of each half:

* sync: :class:`SyncHTTPTransport` over ``httpx2`` (pluggable ``httpx2.Client`` or transport, so
  tests can use ``httpx2.MockTransport``);
* async: :class:`AsyncHTTPTransport` over ``aiohttp`` (the fastest measured here: see
  ``docs/transport.md``), or :class:`HttpxAsyncTransport` over ``httpx2.AsyncClient`` for users
  who need httpx features or want ``MockTransport`` in async tests.

A transport sends an :class:`HTTPRequest` and returns a response with ``status``, ``headers``
and the body as bytes (``read``) or an iterator of byte chunks (``iter_bytes``). Transport
failures come out as :class:`BackendConnectionError` / :class:`BackendTimeoutError`. Nothing
here retries: the router is the one owner of retries.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from llmrouter.errors import BackendConnectionError, BackendTimeoutError, ProtocolError

if TYPE_CHECKING:
    import httpx2

__all__ = [
    "AsyncHTTPTransport",
    "AsyncResponse",
    "HTTPRequest",
    "HttpxAsyncTransport",
    "SyncHTTPTransport",
    "SyncResponse",
]

_READ_SIZE = 65536


@dataclass(slots=True)
class HTTPRequest:
    """What a codec asks the transport to send.

    Attributes:
        method: ``GET`` or ``POST``.
        url: the full URL.
        headers: request headers (may hold the key: never log them).
        body: the encoded body, if any.
        backend: the backend's display name, for error messages.
        connect_timeout: seconds to connect.
        first_byte_timeout: seconds from sending to the response headers (aiohttp: to the
            first body chunk too, via :meth:`AsyncResponse.first_chunk_received`).
        read_timeout: seconds of silence tolerated while reading the body afterwards.
        total_timeout: seconds for the whole exchange (what is left of the request's deadline).

    The driver sets the timeouts (codecs leave them alone), capped by the request's deadline.
    """

    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None = None
    backend: str = ""
    connect_timeout: float | None = None
    first_byte_timeout: float | None = None
    read_timeout: float | None = None
    total_timeout: float | None = None


class SyncResponse(Protocol):
    """A response whose body has not been read yet."""

    status: int
    headers: Mapping[str, str]

    def read(self) -> bytes: ...
    def iter_bytes(self) -> Iterator[bytes]: ...
    def close(self) -> None: ...


class AsyncResponse(Protocol):
    """The async twin of :class:`SyncResponse`."""

    status: int
    headers: Mapping[str, str]

    async def aread(self) -> bytes: ...
    def aiter_bytes(self) -> AsyncIterator[bytes]: ...
    async def aclose(self) -> None: ...


# ---------------------------------------------------------------------------------------------
# httpx2 (sync, and async for those who ask)


def _httpx_errors() -> tuple[type[BaseException], ...]:
    import httpx2

    return (httpx2.TransportError, httpx2.StreamError, OSError)


def _aiohttp_errors() -> tuple[type[BaseException], ...]:
    import asyncio

    import aiohttp

    return (aiohttp.ClientError, asyncio.TimeoutError, OSError)


def _httpx_error(exc: BaseException, request: HTTPRequest) -> Exception:
    import httpx2

    what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if isinstance(exc, httpx2.ConnectTimeout):
        return BackendTimeoutError(f"connect timeout ({what})", backend=request.backend)
    if isinstance(exc, httpx2.TimeoutException):
        return BackendTimeoutError(f"read timeout ({what})", backend=request.backend)
    return BackendConnectionError(what, backend=request.backend)


_ssl_context: Any = None


def _shared_ssl_context() -> Any:
    """One TLS context (CA bundle loaded once, ~25 ms) for every httpx2 client we build."""
    global _ssl_context
    if _ssl_context is None:
        import httpx2

        _ssl_context = httpx2.create_ssl_context()
    return _ssl_context


def _httpx_timeout(request: HTTPRequest) -> dict[str, float | None]:
    return {
        "connect": request.connect_timeout,
        "read": request.first_byte_timeout or request.total_timeout,
        "write": request.first_byte_timeout or request.total_timeout,
        "pool": request.connect_timeout,
    }


def _body_timeout(timeouts: dict[str, float | None], request: HTTPRequest) -> None:
    # httpcore reads the "read" timeout when the body is first read, after send() returned:
    # from here on the idle timeout applies (or, without one, the first-byte deadline still
    # bounds every read). httpx cannot change it again mid-body, so for a stream the first
    # chunk waits at most this long too.
    timeouts["read"] = request.read_timeout or request.first_byte_timeout or request.total_timeout


class _HttpxSyncResponse:
    __slots__ = ("_request", "_response", "headers", "status")

    def __init__(self, response: httpx2.Response, request: HTTPRequest) -> None:
        self._response = response
        self._request = request
        self.status = response.status_code
        self.headers: Mapping[str, str] = response.headers

    def read(self) -> bytes:
        try:
            return self._response.read()
        except _httpx_errors() as exc:
            raise _httpx_error(exc, self._request) from exc
        finally:
            self._response.close()

    def iter_bytes(self) -> Iterator[bytes]:
        try:
            yield from self._response.iter_bytes()
        except _httpx_errors() as exc:
            raise _httpx_error(exc, self._request) from exc

    def close(self) -> None:
        self._response.close()


class SyncHTTPTransport:
    """Sends requests with ``httpx2.Client``.

    Args:
        client: an ``httpx2.Client`` to use (not closed by us); default: our own.
        transport: an ``httpx2`` transport (e.g. ``httpx2.MockTransport``) for our own client.
    """

    def __init__(
        self,
        client: httpx2.Client | None = None,
        *,
        transport: httpx2.BaseTransport | None = None,
    ) -> None:
        self._client = client
        self._owned = client is None
        self._transport = transport

    def _get_client(self) -> httpx2.Client:
        if self._client is None:
            import httpx2

            self._client = httpx2.Client(
                transport=self._transport,
                verify=_shared_ssl_context(),
                timeout=None,
                follow_redirects=False,
                limits=httpx2.Limits(max_connections=1000, max_keepalive_connections=100),
            )
        return self._client

    def send(self, request: HTTPRequest) -> SyncResponse:
        client = self._get_client()
        timeouts = _httpx_timeout(request)
        req = client.build_request(
            request.method,
            request.url,
            headers=request.headers,
            content=request.body,
            extensions={"timeout": timeouts},
        )
        try:
            response = client.send(req, stream=True)
        except _httpx_errors() as exc:
            raise _httpx_error(exc, request) from exc
        _body_timeout(timeouts, request)
        return _HttpxSyncResponse(response, request)

    def close(self) -> None:
        if self._client is not None and self._owned:
            self._client.close()
        self._client = None if self._owned else self._client


class _HttpxAsyncResponse:
    __slots__ = ("_request", "_response", "headers", "status")

    def __init__(self, response: httpx2.Response, request: HTTPRequest) -> None:
        self._response = response
        self._request = request
        self.status = response.status_code
        self.headers: Mapping[str, str] = response.headers

    async def aread(self) -> bytes:
        try:
            return await self._response.aread()
        except _httpx_errors() as exc:
            raise _httpx_error(exc, self._request) from exc
        finally:
            await self._response.aclose()

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.aiter_bytes():
                yield chunk
        except _httpx_errors() as exc:
            raise _httpx_error(exc, self._request) from exc

    async def aclose(self) -> None:
        await self._response.aclose()


class HttpxAsyncTransport:
    """Sends requests with ``httpx2.AsyncClient`` (pluggable, like :class:`SyncHTTPTransport`)."""

    def __init__(
        self,
        client: httpx2.AsyncClient | None = None,
        *,
        transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        self._client = client
        self._owned = client is None
        self._transport = transport

    def _get_client(self) -> httpx2.AsyncClient:
        if self._client is None:
            import httpx2

            self._client = httpx2.AsyncClient(
                transport=self._transport,
                verify=_shared_ssl_context(),
                timeout=None,
                follow_redirects=False,
                limits=httpx2.Limits(max_connections=1000, max_keepalive_connections=100),
            )
        return self._client

    async def send(self, request: HTTPRequest) -> AsyncResponse:
        client = self._get_client()
        timeouts = _httpx_timeout(request)
        req = client.build_request(
            request.method,
            request.url,
            headers=request.headers,
            content=request.body,
            extensions={"timeout": timeouts},
        )
        try:
            response = await client.send(req, stream=True)
        except _httpx_errors() as exc:
            raise _httpx_error(exc, request) from exc
        _body_timeout(timeouts, request)
        return _HttpxAsyncResponse(response, request)

    async def aclose(self) -> None:
        if self._client is not None and self._owned:
            await self._client.aclose()
        self._client = None if self._owned else self._client


# ---------------------------------------------------------------------------------------------
# aiohttp (the default async transport)


def _aiohttp_error(exc: BaseException, request: HTTPRequest) -> Exception:
    import asyncio

    import aiohttp

    what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return BackendTimeoutError(f"connect timeout ({what})", backend=request.backend)
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return BackendTimeoutError(f"read timeout ({what})", backend=request.backend)
    if isinstance(exc, aiohttp.ClientResponseError):
        # aiohttp's parser rejected the answer (not HTTP at all, a bad status line); its
        # "400" is aiohttp's own code, not the server's.
        return ProtocolError(f"malformed HTTP response ({exc.message})", backend=request.backend)
    return BackendConnectionError(what, backend=request.backend)


class _AiohttpResponse:
    __slots__ = ("_request", "_response", "headers", "status")

    def __init__(self, response: Any, request: HTTPRequest) -> None:
        self._response = response
        self._request = request
        self.status: int = response.status
        self.headers: Mapping[str, str] = response.headers

    async def aread(self) -> bytes:
        try:
            body: bytes = await self._response.read()
            return body
        except _aiohttp_errors() as exc:
            raise _aiohttp_error(exc, self._request) from exc
        finally:
            self._response.release()

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        content = self._response.content
        try:
            chunk = await content.readany()
            if not chunk:
                return
            # The first chunk is in: from now on the idle timeout applies, not the TTFT one.
            protocol = getattr(self._response.connection, "protocol", None)
            if protocol is not None:
                protocol.read_timeout = self._request.read_timeout
            while chunk:
                yield chunk
                chunk = await content.readany()
        except _aiohttp_errors() as exc:
            raise _aiohttp_error(exc, self._request) from exc

    async def aclose(self) -> None:
        # close(), not release(): a stream closed early must drop its connection, since the
        # server may still be writing into it.
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


class AsyncHTTPTransport:
    """Sends requests with ``aiohttp`` (imported on first use).

    One ``aiohttp.ClientSession`` per event loop: a client used from a new loop (as some test
    runners do) gets a fresh session instead of a broken one.
    """

    def __init__(self, *, limit: int = 0) -> None:
        self._session: Any = None
        self._loop: Any = None
        self._limit = limit

    def _get_session(self) -> Any:
        import asyncio

        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop or self._session.closed:
            import aiohttp

            connector = aiohttp.TCPConnector(limit=self._limit, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=True,
                skip_auto_headers=("User-Agent",),
            )
            self._loop = loop
        return self._session

    async def send(self, request: HTTPRequest) -> AsyncResponse:
        import aiohttp

        session = self._get_session()
        # One timer for the whole exchange; per-read timers only where a user asked for them
        # (aiohttp re-arms a per-read timer on every packet).
        timeout = aiohttp.ClientTimeout(
            total=request.total_timeout,
            sock_connect=request.connect_timeout,
            sock_read=request.first_byte_timeout,
        )
        try:
            response = await session.request(
                request.method,
                request.url,
                data=request.body,
                headers=request.headers,
                timeout=timeout,
                allow_redirects=False,
            )
        except _aiohttp_errors() as exc:
            raise _aiohttp_error(exc, request) from exc
        return _AiohttpResponse(response, request)

    async def aclose(self) -> None:
        import asyncio

        if self._session is not None and not self._session.closed:
            try:
                same_loop = asyncio.get_running_loop() is self._loop
            except RuntimeError:
                same_loop = False
            if same_loop:
                await self._session.close()
        self._session = None

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

Header values are checked before anything is sent: surrounding spaces are dropped (they are
not part of an HTTP field value), and a value with control characters or non-ASCII text is an
:class:`InvalidRequestError` naming the header, never its value (httpx would raise
``LocalProtocolError: Illegal header value b'Bearer sk-...\\r'``, aiohttp a bare ``ValueError``,
both quoting the key). Every transport error's text has the request's header values cut from
it (``llmrouter._scrub``), and the library's own exception is chained only when its text shows
none of them.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from llmrouter._scrub import header_secrets, scrub, scrub_error
from llmrouter.errors import (
    BackendConnectionError,
    BackendError,
    BackendTimeoutError,
    InvalidRequestError,
    ProtocolError,
)

if TYPE_CHECKING:
    import httpx2

__all__ = [
    "AsyncHTTPTransport",
    "AsyncResponse",
    "HTTPRequest",
    "HttpxAsyncTransport",
    "SyncHTTPTransport",
    "SyncResponse",
    "check_headers",
    "with_query",
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


def with_query(url: str, query: Mapping[str, str]) -> str:
    """``url`` with ``query`` added to its query string."""
    from urllib.parse import urlencode

    return f"{url}{'&' if '?' in url else '?'}{urlencode(query)}"


def check_headers(request: HTTPRequest) -> None:
    """Make the request's header values sendable, or refuse them naming the header."""
    headers = request.headers
    for name, value in headers.items():
        if value.isascii() and value.isprintable() and value == value.strip(" \t"):
            continue
        stripped = value.strip(" \t")
        if stripped.isascii() and stripped.isprintable():
            headers[name] = stripped
            continue
        where = f"{request.backend}: " if request.backend else ""
        raise InvalidRequestError(
            f"{where}the value of request header {name!r} holds control characters or "
            "non-ASCII text and cannot be sent in HTTP; check where it was read from (a CRLF "
            "file, an editor, a copied quote)",
            param="headers",
        )


def _transport_failure(exc: BaseException, request: HTTPRequest, mapped: Exception) -> Exception:
    """``mapped`` (built from ``exc``) with the request's header values cut from its text;
    ``exc`` chained as its cause unless its own text shows one of them. Raise the result
    outside the ``except`` block, so that ``exc`` is not kept as the implicit context."""
    secrets = header_secrets(request.headers, every=True)
    if isinstance(mapped, BackendError):
        mapped.__cause__ = exc
        scrub_error(mapped, secrets)
    return mapped


def _what(exc: BaseException, request: HTTPRequest) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return scrub(text, header_secrets(request.headers, every=True))


# ---------------------------------------------------------------------------------------------
# httpx2 (sync, and async for those who ask)


def _httpx_errors() -> tuple[type[BaseException], ...]:
    import httpx2

    return (httpx2.TransportError, httpx2.StreamError, OSError, UnicodeError, ValueError)


def _aiohttp_errors() -> tuple[type[BaseException], ...]:
    import asyncio

    import aiohttp

    return (aiohttp.ClientError, asyncio.TimeoutError, OSError, UnicodeError, ValueError)


def _httpx_error(exc: BaseException, request: HTTPRequest) -> Exception:
    import httpx2

    what = _what(exc, request)
    if isinstance(exc, httpx2.ConnectTimeout):
        mapped: Exception = BackendTimeoutError(
            f"connect timeout ({what})", backend=request.backend
        )
    elif isinstance(exc, httpx2.TimeoutException):
        mapped = BackendTimeoutError(f"read timeout ({what})", backend=request.backend)
    elif isinstance(exc, (httpx2.LocalProtocolError, UnicodeError, ValueError)):
        # Refused before sending (a header or URL httpx will not write): the same on every
        # attempt, so not retryable.
        mapped = BackendConnectionError(
            f"the request could not be sent ({what})", backend=request.backend, retryable=False
        )
    else:
        mapped = BackendConnectionError(what, backend=request.backend)
    return _transport_failure(exc, request, mapped)


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
            error = _httpx_error(exc, self._request)
            raise error from error.__cause__
        finally:
            self._response.close()

    def iter_bytes(self) -> Iterator[bytes]:
        try:
            yield from self._response.iter_bytes()
        except _httpx_errors() as exc:
            error = _httpx_error(exc, self._request)
            raise error from error.__cause__

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
        check_headers(request)
        client = self._get_client()
        timeouts = _httpx_timeout(request)
        try:
            req = client.build_request(
                request.method,
                request.url,
                headers=request.headers,
                content=request.body,
                extensions={"timeout": timeouts},
            )
            response = client.send(req, stream=True)
        except _httpx_errors() as exc:
            error = _httpx_error(exc, request)
        else:
            _body_timeout(timeouts, request)
            return _HttpxSyncResponse(response, request)
        raise error  # outside the except block: the library's text is not kept as context

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
            error = _httpx_error(exc, self._request)
            raise error from error.__cause__
        finally:
            await self._response.aclose()

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.aiter_bytes():
                yield chunk
        except _httpx_errors() as exc:
            error = _httpx_error(exc, self._request)
            raise error from error.__cause__

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
        check_headers(request)
        client = self._get_client()
        timeouts = _httpx_timeout(request)
        try:
            req = client.build_request(
                request.method,
                request.url,
                headers=request.headers,
                content=request.body,
                extensions={"timeout": timeouts},
            )
            response = await client.send(req, stream=True)
        except _httpx_errors() as exc:
            error = _httpx_error(exc, request)
        else:
            _body_timeout(timeouts, request)
            return _HttpxAsyncResponse(response, request)
        raise error  # outside the except block: the library's text is not kept as context

    async def aclose(self) -> None:
        if self._client is not None and self._owned:
            await self._client.aclose()
        self._client = None if self._owned else self._client


# ---------------------------------------------------------------------------------------------
# aiohttp (the default async transport)


def _aiohttp_error(exc: BaseException, request: HTTPRequest) -> Exception:
    import asyncio

    import aiohttp

    what = _what(exc, request)
    mapped: Exception
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        mapped = BackendTimeoutError(f"connect timeout ({what})", backend=request.backend)
    elif isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        mapped = BackendTimeoutError(f"read timeout ({what})", backend=request.backend)
    elif isinstance(exc, aiohttp.ClientResponseError):
        # aiohttp's parser rejected the answer (not HTTP at all, a bad status line); its
        # "400" is aiohttp's own code, not the server's.
        message = scrub(str(exc.message), header_secrets(request.headers, every=True))
        mapped = ProtocolError(f"malformed HTTP response ({message})", backend=request.backend)
    elif isinstance(exc, (UnicodeError, ValueError)) and not isinstance(exc, OSError):
        # Refused before sending (a header or URL aiohttp will not write): the same on every
        # attempt, so not retryable.
        mapped = BackendConnectionError(
            f"the request could not be sent ({what})", backend=request.backend, retryable=False
        )
    else:
        mapped = BackendConnectionError(what, backend=request.backend)
    return _transport_failure(exc, request, mapped)


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
            error = _aiohttp_error(exc, self._request)
            raise error from error.__cause__
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
            error = _aiohttp_error(exc, self._request)
            raise error from error.__cause__

    async def aclose(self) -> None:
        # close(), not release(): a stream closed early must drop its connection, since the
        # server may still be writing into it.
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


def _drop_session(session: Any) -> None:
    """Let go of a session made on another event loop (likely closed by now: ``asyncio.run``
    twice with one client) without awaiting on it, and without aiohttp's "Unclosed client
    session" / "Unclosed connector" complaints: its connections belong to that loop and are
    closed with it, or here when it still runs."""
    if session.closed:
        return
    connector = session.connector
    session.detach()
    if connector is not None:
        connector._close()  # synchronous; does nothing to the transports of a closed loop


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

            if self._session is not None:
                _drop_session(self._session)

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

        check_headers(request)
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
            error = _aiohttp_error(exc, request)
        else:
            return _AiohttpResponse(response, request)
        raise error  # outside the except block: the library's text is not kept as context

    def __del__(self) -> None:
        # A client dropped unclosed (the openai README's ``asyncio.run(main())`` with a
        # module-level client) lets go of its session quietly, as httpx does, rather than
        # leaving aiohttp to print "Unclosed client session" when the session is collected.
        session = getattr(self, "_session", None)
        if session is not None:
            with contextlib.suppress(Exception):  # nothing may escape a finaliser
                _drop_session(session)

    async def aclose(self) -> None:
        import asyncio

        if self._session is not None and not self._session.closed:
            try:
                same_loop = asyncio.get_running_loop() is self._loop
            except RuntimeError:
                same_loop = False
            if same_loop:
                await self._session.close()
            else:
                _drop_session(self._session)
        self._session = None

"""The connection layer under the handlers: slow clients cut off, connections capped, and
malformed HTTP answered in OpenAI's error shape.

aiohttp parses HTTP; this module decides how long a client may take and how many may connect.

* **Header timeout.** A request's line and headers must be in within ``header_timeout_s`` of
  its first byte (of the connection's opening, for its first request); otherwise the client
  gets a 408 and the connection is closed. aiohttp has no such timer: :class:`GatewayProtocol`
  starts one, and :func:`connection_middleware` stops it when a request reaches the app.
* **Keep-alive idle timeout** is aiohttp's own ``keepalive_timeout``; the **body timeout** is
  the handler's (``intake``).
* **Connection cap.** Past ``max_connections`` open connections, a new one is answered 503 (at
  its first request) and closed; past twice the cap it is closed at once. Connections already
  open are not touched, so the gateway's file descriptors stay bounded whatever the flood.
* **Malformed HTTP** (a bad request line, an oversize or invalid header, a lying
  ``Content-Length``, broken chunked framing) is refused by aiohttp's parser;
  :meth:`GatewayProtocol.handle_error` answers it 400 (431 for an oversize header) with an
  OpenAI error object and logs one line, never a traceback and never the offending bytes.
* **Client gone, work stops.** :class:`GatewayRunner` turns on aiohttp's handler cancellation:
  when a client disconnects, its handler is cancelled, and the cancellation reaches the
  backend call.

Serve the app with :class:`GatewayRunner` instead of ``web.AppRunner`` to get all of this.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import http_exceptions, web
from aiohttp.web_protocol import RequestHandler

from llmrouter.server.metrics import METRICS
from llmrouter.server.responses import error_body
from llmrouter.server.settings import SETTINGS

__all__ = ["ConnectionGuard", "GatewayProtocol", "GatewayRunner", "connection_middleware"]

logger = logging.getLogger("llmrouter.server")

_JSON = "application/json"


def _raw_response(status: int, reason: str, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {_JSON}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


class ConnectionGuard:
    """Counts the open connections of one listening gateway against its cap.

    Attributes:
        limit: connections served normally; up to twice as many get a 503.
        open: connections open now.
        refused: connections answered 503 or closed for being over the cap, so far.
        timed_out: connections closed for a header timeout, so far.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0
        self.refused = 0
        self.timed_out = 0

    def counts(self) -> dict[str, int]:
        """For the metrics: ``open``, ``header_timeout``, ``over_capacity``."""
        return {"open": self.open, "header_timeout": self.timed_out, "over_capacity": self.refused}


class GatewayProtocol(RequestHandler):
    """aiohttp's request handler with a header timer, the connection cap and OpenAI-shaped
    protocol errors (one instance per connection)."""

    def __init__(
        self,
        manager: web.Server,
        *,
        loop: asyncio.AbstractEventLoop,
        guard: ConnectionGuard,
        header_timeout: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, loop=loop, **kwargs)
        self._guard = guard
        self._header_timeout = header_timeout
        self._counted = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._awaiting_head = True
        self.over_capacity = False

    # -- connection ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        guard = self._guard
        guard.open += 1
        self._counted = True
        if guard.open > 2 * guard.limit:
            guard.refused += 1
            self.force_close()
            return
        if guard.open > guard.limit:
            guard.refused += 1
            self.over_capacity = True
        self._arm()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._counted:
            self._counted = False
            self._guard.open -= 1
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if data and self._awaiting_head and self._head_timer is None:
            self._arm()  # the first byte of a later request on this connection
        super().data_received(data)

    # -- the header timer ------------------------------------------------------------------

    def _arm(self) -> None:
        self._head_timer = self._loop.call_later(self._header_timeout, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._awaiting_head or self.transport is None:
            return
        self._guard.timed_out += 1
        body = error_body(
            f"the request headers did not arrive within {self._header_timeout:g} s",
            "invalid_request_error",
            code="request_timeout",
        )
        self.transport.write(_raw_response(408, "Request Timeout", body))
        self.force_close()

    def head_received(self) -> None:
        """A request's headers are in (the app got it): stop the header timer."""
        self._awaiting_head = False
        self._disarm()

    def request_done(self) -> None:
        """The app answered: the next byte on this connection starts a new header timer."""
        self._awaiting_head = True

    # -- protocol errors -------------------------------------------------------------------

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """Answer what aiohttp could not serve: malformed HTTP (400/431), or a handler that
        raised (500, a bug: logged with its traceback)."""
        if request.writer.output_size > 0:
            raise ConnectionError("the response had started: no error answer can follow")
        error_type, code = "invalid_request_error", "malformed_request"
        if isinstance(exc, http_exceptions.LineTooLong):
            status, text = 431, "a request header (or the request line) is too long"
        elif isinstance(exc, http_exceptions.HttpProcessingError):
            status = 400
            text = f"malformed HTTP request ({type(exc).__name__})"
        else:  # not reachable from client input: every handler catches its errors
            logger.error("unhandled error serving a request", exc_info=exc)
            status, text = 500, "internal error"
            error_type, code = "server_error", "internal_error"
        if status < 500:
            logger.info("refused a malformed request: %s", type(exc).__name__)
        response = web.Response(
            status=status, body=error_body(text, error_type, code=code), content_type=_JSON
        )
        response.force_close()
        return response


class _GatewayServer(web.Server):
    """aiohttp's low-level server, making a :class:`GatewayProtocol` per connection."""

    def __init__(
        self, *args: Any, guard: ConnectionGuard, header_timeout: float, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._guard = guard
        self._header_timeout = header_timeout

    def __call__(self) -> GatewayProtocol:
        return GatewayProtocol(
            self,
            loop=self._loop,
            guard=self._guard,
            header_timeout=self._header_timeout,
            **self._kwargs,
        )


class GatewayRunner(web.AppRunner):
    """``web.AppRunner`` for an app made by ``create_app``, with the connection limits of its
    settings (timeouts, the connection cap) and handler cancellation on disconnect.

    Args:
        app: the gateway application.
        **kwargs: passed to ``web.AppRunner`` (``shutdown_timeout``, ...).
    """

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        settings = app[SETTINGS]
        kwargs.setdefault("access_log", None)
        super().__init__(
            app,
            handler_cancellation=True,
            keepalive_timeout=settings.keepalive_timeout_s,
            # Reading the unread rest of a refused body, so the client sees the answer.
            lingering_time=min(settings.body_timeout_s, 5.0),
            **kwargs,
        )
        self.guard = ConnectionGuard(settings.max_connections)
        self._header_timeout = settings.header_timeout_s
        if METRICS in app:
            app[METRICS].connection_counts = self.guard.counts

    async def _make_server(self) -> web.Server:
        base = await super()._make_server()
        return _GatewayServer(
            base.request_handler,
            request_factory=base.request_factory,
            loop=asyncio.get_running_loop(),
            guard=self.guard,
            header_timeout=self._header_timeout,
            **self._kwargs,
        )


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def connection_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Stops the header timer, answers 503 on a connection over the cap, and re-arms the
    timer for the connection's next request."""
    protocol = request.protocol
    if not isinstance(protocol, GatewayProtocol):
        return await handler(request)  # served by a plain web.AppRunner: no limits here
    protocol.head_received()
    try:
        if protocol.over_capacity:
            body = error_body(
                "the gateway has too many open connections; retry shortly",
                "service_unavailable",
                code="too_many_connections",
            )
            response = web.Response(
                status=503, body=body, content_type=_JSON, headers={"Retry-After": "1"}
            )
            response.force_close()
            return response
        return await handler(request)
    finally:
        protocol.request_done()

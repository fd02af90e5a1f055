"""Builds the gateway application and runs it: routes, start-up checks, shutdown.

``create_app(settings)`` gives an ``aiohttp.web.Application`` (for tests and embedding; serve
it with :class:`~llmrouter.server.connections.GatewayRunner` to get the connection limits);
``serve(settings, host, port)`` runs it until SIGINT/SIGTERM, then shuts down gracefully: the
listening socket closes, in-flight requests get ``settings.grace_s`` seconds to finish, streams
still running after that end with an error event and ``[DONE]``. The settings type lives in
``settings``, which this module and ``routes`` both import.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any

from aiohttp import web

from llmrouter._async.client import AsyncClient
from llmrouter.errors import ConfigError
from llmrouter.events import Event
from llmrouter.server.auth import KeyStore
from llmrouter.server.connections import GatewayRunner, connection_middleware
from llmrouter.server.embeddings import embeddings
from llmrouter.server.metrics import METRICS, GatewayMetrics
from llmrouter.server.routes import Gateway
from llmrouter.server.settings import SETTINGS, GatewaySettings, check_settings
from llmrouter.state import MemoryState, aopen_state

__all__ = ["GATEWAY", "check_bind", "create_app", "install_loop", "run", "serve"]

GATEWAY = web.AppKey("gateway", Gateway)


def _events_to(metrics: GatewayMetrics, user_hook: Any) -> Callable[[Event], None]:
    if user_hook is None:
        return metrics.on_event

    def both(event: Event) -> None:
        metrics.on_event(event)
        user_hook(event)

    return both


def create_app(settings: GatewaySettings) -> web.Application:
    """The gateway as an aiohttp application; the client is closed on the app's cleanup.

    Raises:
        ConfigError: the backend chain or an option is wrong.
    """
    check_settings(settings)
    metrics = GatewayMetrics()
    options = dict(settings.client_options)
    options["on_event"] = _events_to(metrics, options.get("on_event"))
    middlewares: list[Any] = [connection_middleware]
    shutdown_otel: Callable[[], None] | None = None
    if settings.otel:
        from llmrouter.otel import Telemetry
        from llmrouter.server.tracing import configure_from_env, tracing_middleware

        shutdown_otel = configure_from_env()
        middlewares.append(tracing_middleware())
        options.setdefault("telemetry", Telemetry(capture_content=settings.otel_content or None))
    else:
        options.setdefault("telemetry", False)  # LLMROUTER_OTEL reaches the gateway as --otel
    # One store for the client's breakers and budget and the gateway's limits.
    store = aopen_state(options.pop("state", settings.state))
    client = AsyncClient(settings.url, state=store or MemoryState(), **options)
    try:
        gateway = Gateway(settings, client, metrics, store)
    except ValueError as exc:  # a rate limit that is not a positive number
        raise ConfigError(str(exc)) from exc
    metrics.breaker_states = gateway.breaker_states

    # aiohttp enforces the size itself for bodies without Content-Length (chunked uploads).
    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=middlewares)
    app[GATEWAY] = gateway
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app.router.add_post("/v1/chat/completions", gateway.chat_completions)
    app.router.add_post("/v1/embeddings", functools.partial(embeddings, gateway))
    app.router.add_get("/v1/models", gateway.models)
    app.router.add_get("/health", gateway.health)
    app.router.add_get("/ready", gateway.ready)
    app.router.add_get("/metrics", gateway.prometheus)
    app.router.add_route("*", "/{path:.*}", gateway.not_found)  # last: only what nothing matched
    app.on_shutdown.append(gateway.drain)

    async def close_client(app: web.Application) -> None:
        await client.aclose()
        if store is not None:
            await store.aclose()
        if shutdown_otel is not None:
            shutdown_otel()  # flush what is still batched

    app.on_cleanup.append(close_client)
    return app


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, keys: KeyStore) -> None:
    """Refuse to listen beyond loopback without API keys.

    Raises:
        ConfigError: ``host`` is not a loopback address and no key is configured.
    """
    if not keys.enabled and not _is_loopback(host):
        raise ConfigError(
            f"refusing to listen on {host} without API keys: anyone who can reach it could use "
            "your backends. Set LLMROUTER_API_KEYS or --keys-file, or listen on 127.0.0.1"
        )


async def run(
    settings: GatewaySettings,
    host: str,
    port: int,
    *,
    announce: Callable[[str], None],
    stop: asyncio.Event | None = None,
    sock: socket.socket | None = None,
) -> None:
    """Serve until ``stop`` is set (or SIGINT/SIGTERM), then shut down gracefully.

    ``sock``: an already listening socket to accept on instead of binding ``host:port`` (a
    worker of ``--workers N`` gets its supervisor's).
    """
    check_bind(host, settings.keys)
    app = create_app(settings)
    # The grace period is spent in the app's on_shutdown; aiohttp's own timeout only covers
    # what is left after it.
    runner = GatewayRunner(app, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site: web.BaseSite = (
            web.TCPSite(runner, host, port) if sock is None else web.SockSite(runner, sock)
        )
        await site.start()
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, stop.set)
        bound = sock.getsockname() if sock is not None else runner.addresses[0]
        gateway = app[GATEWAY]
        names = ", ".join(spec.name for spec in gateway.client.backends)
        auth = (
            f"{len(settings.keys.key_ids)} API key(s)"
            if settings.keys.enabled
            else "OFF (no API keys configured: LLMROUTER_API_KEYS / --keys-file); "
            "listening on loopback only"
        )
        announce(
            f"llmrouter gateway listening on http://{host}:{bound[1]} -> {names}; "
            f"authentication: {auth}"
        )
        await stop.wait()
        announce(f"llmrouter gateway: shutting down (grace {settings.grace_s:g} s)")
    finally:
        await runner.cleanup()


def install_loop(choice: str = "auto") -> str:
    """Choose the event loop: ``uvloop`` when installed (``llmrouter[server]``) unless
    ``choice`` is ``"asyncio"``; ``"uvloop"`` requires it.

    Returns:
        the loop in use: ``"uvloop"`` or ``"asyncio"``.

    Raises:
        MissingDependencyError: ``choice`` is ``"uvloop"`` and it is not installed.
    """
    if choice == "asyncio":
        asyncio.set_event_loop_policy(None)
        return "asyncio"
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            from llmrouter.errors import MissingDependencyError

            raise MissingDependencyError("uvloop", "server", "--loop uvloop") from None
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def _print(line: str) -> None:
    print(line, flush=True)


def _serve_socket(settings: GatewaySettings, sock: socket.socket, host: str, loop: str) -> None:
    """One worker of ``--workers N``: serve on the supervisor's listening socket."""
    install_loop(loop)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(settings, host, 0, announce=lambda _line: None, sock=sock))


def serve(
    settings: GatewaySettings,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    workers: int = 1,
    loop: str = "auto",
) -> int:
    """Run the gateway until SIGINT/SIGTERM (``llmrouter serve``).

    Args:
        workers: processes serving the port; more than 1 runs a
            :class:`~llmrouter.server.workers.Supervisor` (POSIX only).
        loop: ``"auto"`` (uvloop when installed), ``"uvloop"`` or ``"asyncio"``.

    Returns:
        the exit status: 0 after a shutdown, 1 when workers kept dying.
    """
    check_bind(host, settings.keys)
    check_settings(settings)
    if workers > 1:
        from llmrouter.server.workers import Supervisor

        supervisor = Supervisor(
            settings, host, port, workers, _serve_socket, loop=loop, announce=_print
        )
        return supervisor.run()
    install_loop(loop)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(settings, host, port, announce=_print))
    sys.stdout.flush()
    return 0

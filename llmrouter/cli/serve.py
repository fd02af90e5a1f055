"""``llmrouter serve``: the OpenAI-compatible gateway (``llmrouter.server``) before the chain."""

from __future__ import annotations

import argparse
import sys

__all__ = ["add_parser", "run"]


def add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    serve = sub.add_parser(
        "serve",
        parents=[common],
        help="run the OpenAI-compatible gateway in front of the backend chain",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port to listen on (8080; 0: any)")
    serve.add_argument("--url", help="backend URLs (default: LLMROUTER_URL, ...)")
    serve.add_argument(
        "--keys-file",
        help="API keys, one per line ('key' or 'key_id:key'); adds to LLMROUTER_API_KEYS",
    )
    serve.add_argument(
        "--workers",
        default="1",
        help="gateway processes on the port, or 'auto' for the CPUs this process may use "
        "(affinity and cgroup quota). Default 1: without --state each worker keeps its own "
        "breakers and 1/N of the per-key limits, so more workers is a choice to make",
    )
    serve.add_argument(
        "--state",
        help="shared state for breakers and per-key limits across workers and replicas "
        "(redis://host:6379/0; default: LLMROUTER_STATE, else per process)",
    )
    serve.add_argument(
        "--loop",
        choices=("auto", "uvloop", "asyncio"),
        default="auto",
        help="event loop: uvloop when installed (llmrouter[server]), else asyncio (auto)",
    )
    serve.add_argument(
        "--rpm",
        type=int,
        help="requests per minute per key (default: no limit); with --workers N and no "
        "--state, each worker allows rpm/N",
    )
    serve.add_argument(
        "--tpm",
        type=int,
        help="tokens per minute per key (default: no limit); divided by N as --rpm is",
    )
    serve.add_argument(
        "--max-body-bytes", type=int, default=4 * 1024 * 1024, help="largest request body (4 MiB)"
    )
    serve.add_argument(
        "--max-json-depth", type=int, default=64, help="deepest nesting of a JSON body (64)"
    )
    serve.add_argument(
        "--max-messages", type=int, default=2048, help="most messages in one request (2048)"
    )
    serve.add_argument(
        "--max-prompt-tokens",
        type=int,
        default=131072,
        help="largest estimated prompt, 4 characters a token; 0: no limit (131072)",
    )
    serve.add_argument(
        "--max-in-flight-per-key",
        type=int,
        default=64,
        help="requests one key may have running at once, streams included; 0: no limit (64)",
    )
    serve.add_argument(
        "--max-connections",
        type=int,
        default=1024,
        help="open client connections; past it new ones get 503 (1024)",
    )
    serve.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        help="seconds a client has to send a request's headers (10)",
    )
    serve.add_argument(
        "--body-timeout",
        type=float,
        default=30.0,
        help="seconds a client has to send a request's body (30)",
    )
    serve.add_argument(
        "--keepalive-timeout",
        type=float,
        default=15.0,
        help="seconds an idle keep-alive connection stays open (15)",
    )
    serve.add_argument(
        "--timeout", type=float, help="total seconds per request, failover included (60)"
    )
    serve.add_argument(
        "--grace", type=float, default=10.0, help="seconds in-flight requests get on shutdown (10)"
    )
    serve.add_argument(
        "--log-content", action="store_true", help="put messages and answers in the access log"
    )
    serve.add_argument(
        "--no-passthrough",
        action="store_true",
        help="parse and re-encode every streamed chunk instead of relaying an OpenAI SSE "
        "backend's bytes after the first content",
    )
    serve.add_argument(
        "--no-access-log", action="store_true", help="do not write access log lines to stderr"
    )
    serve.add_argument(
        "--otel",
        action="store_true",
        help="OpenTelemetry traces and metrics, traceparent propagated (llmrouter[otel]; "
        "also LLMROUTER_OTEL=1; exporters from OTEL_*: docs/telemetry.md)",
    )
    serve.add_argument(
        "--otel-content",
        action="store_true",
        help="with --otel, record messages and answers on the spans (off by default)",
    )


def run(args: argparse.Namespace) -> int:
    import logging

    from llmrouter._telemetry import telemetry_enabled
    from llmrouter.server import GatewaySettings, KeyStore, serve
    from llmrouter.server.workers import resolve_workers

    if not args.no_access_log:
        access = logging.getLogger("llmrouter.access")
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        access.addHandler(handler)
        access.setLevel(logging.INFO)
        access.propagate = False
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.debug:  # the backends' own error texts (secrets masked), refused requests
        logging.getLogger("llmrouter.server").setLevel(logging.INFO)
    options = {"timeout": args.timeout} if args.timeout is not None else {}
    settings = GatewaySettings(
        url=args.url,
        keys=KeyStore.load(keys_file=args.keys_file),
        requests_per_minute=args.rpm,
        tokens_per_minute=args.tpm,
        max_body_bytes=args.max_body_bytes,
        max_json_depth=args.max_json_depth,
        max_messages=args.max_messages,
        max_prompt_tokens=args.max_prompt_tokens or None,
        max_in_flight_per_key=args.max_in_flight_per_key or None,
        max_connections=args.max_connections,
        header_timeout_s=args.header_timeout,
        body_timeout_s=args.body_timeout,
        keepalive_timeout_s=args.keepalive_timeout,
        grace_s=args.grace,
        log_content=args.log_content,
        debug=args.debug,
        client_options=options,
        state=args.state,
        passthrough=not args.no_passthrough,
        otel=args.otel or args.otel_content or telemetry_enabled(),
        otel_content=args.otel_content,
    )
    return serve(
        settings, args.host, args.port, workers=resolve_workers(args.workers), loop=args.loop
    )

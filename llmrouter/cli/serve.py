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
    serve.add_argument("--rpm", type=int, help="requests per minute per key (default: no limit)")
    serve.add_argument("--tpm", type=int, help="tokens per minute per key (default: no limit)")
    serve.add_argument(
        "--max-body-bytes", type=int, default=4 * 1024 * 1024, help="largest request body (4 MiB)"
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
        "--no-access-log", action="store_true", help="do not write access log lines to stderr"
    )


def run(args: argparse.Namespace) -> int:
    import logging

    from llmrouter.server import GatewaySettings, KeyStore, serve

    if not args.no_access_log:
        access = logging.getLogger("llmrouter.access")
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        access.addHandler(handler)
        access.setLevel(logging.INFO)
        access.propagate = False
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    options = {"timeout": args.timeout} if args.timeout is not None else {}
    settings = GatewaySettings(
        url=args.url,
        keys=KeyStore.load(keys_file=args.keys_file),
        requests_per_minute=args.rpm,
        tokens_per_minute=args.tpm,
        max_body_bytes=args.max_body_bytes,
        grace_s=args.grace,
        log_content=args.log_content,
        client_options=options,
    )
    serve(settings, args.host, args.port)
    return 0

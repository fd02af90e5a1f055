"""The ``llmrouter`` command: ``llmrouter chat "question"`` streams one answer;
``llmrouter serve`` runs the OpenAI-compatible gateway (``llmrouter.server``).

The full command line (interactive chat, check, models) builds on this.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmrouter", description="Talk to any LLM inference engine through one client."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    chat = sub.add_parser("chat", help="stream one answer from the configured backend chain")
    chat.add_argument("prompt", help="the question")
    chat.add_argument("--url", help="backend URLs (default: LLMROUTER_URL, ...)")
    chat.add_argument("--model", help="model name, where the backend does not pin one")
    chat.add_argument("--system", help="a system message")
    chat.add_argument("--temperature", type=float)
    chat.add_argument("--max-tokens", type=int, default=512)
    chat.add_argument("--json", action="store_true", help="print the response JSON instead")
    _serve_parser(sub)
    return parser


def _serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser(
        "serve", help="run the OpenAI-compatible gateway in front of the backend chain"
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


def _serve(args: argparse.Namespace) -> int:
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


def _chat(args: argparse.Namespace) -> int:
    from llmrouter import Client

    messages = []
    if args.system:
        messages.append({"role": "system", "content": args.system})
    messages.append({"role": "user", "content": args.prompt})
    options = {"model": args.model, "temperature": args.temperature, "max_tokens": args.max_tokens}
    with Client(args.url) as client:
        if args.json:
            resp = client.chat.completions.create(messages=messages, **options)
            print(json.dumps(resp.model_dump(exclude_unset=True), indent=2))
            return 0
        with client.chat.completions.create(messages=messages, stream=True, **options) as stream:
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    sys.stdout.write(chunk.choices[0].delta.content)
                    sys.stdout.flush()
        sys.stdout.write("\n")
        print(f"[{stream.route.backend}]", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``llmrouter`` command and ``python -m llmrouter``."""
    from llmrouter.errors import LLMRouterError

    args = _parser().parse_args(argv)
    try:
        return _serve(args) if args.command == "serve" else _chat(args)
    except LLMRouterError as exc:
        print(f"llmrouter: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130

"""The ``llmrouter`` command: ``llmrouter chat "question"`` streams one answer.

The full command line (interactive chat, check, models, serve) builds on this.
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
    return parser


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
        return _chat(args)
    except LLMRouterError as exc:
        print(f"llmrouter: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130

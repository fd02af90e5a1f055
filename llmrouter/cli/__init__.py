"""The ``llmrouter`` command (and ``python -m llmrouter``).

::

    llmrouter chat [PROMPT]   stream an answer; without PROMPT, an interactive session (chat.py)
    llmrouter check           probe every backend; exit status 1 when one is down    (check.py)
    llmrouter models          the union of the backends' models                      (check.py)
    llmrouter plan [MODEL]    GPU memory, fit and self-hosting cost arithmetic        (plan.py)
    llmrouter serve           the OpenAI-compatible gateway                          (serve.py)

Answers, tables and JSON go to stdout; progress, routes and errors to stderr. An error is one
line plus a hint; ``--debug`` (before or after the subcommand) adds the traceback and logs every
router event. Each subcommand module imports the client only when it runs, so ``--help`` is quick.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from llmrouter.cli import chat, check, plan, serve
from llmrouter.cli.report import report_error

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmrouter", description="Talk to any LLM inference engine through one client."
    )
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks and every router event"
    )
    # The same flag after the subcommand; SUPPRESS keeps the one given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show tracebacks and every router event",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chat.add_parser(sub, common)
    check.add_parsers(sub, common)
    plan.add_parser(sub, common)
    serve.add_parser(sub, common)
    return parser


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "chat": chat.run,
    "check": check.run_check,
    "models": check.run_models,
    "plan": plan.run,
    "serve": serve.run,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``llmrouter`` command and ``python -m llmrouter``."""
    from llmrouter.errors import LLMRouterError

    args = _parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except LLMRouterError as exc:
        report_error(exc, debug=args.debug, command=args.command)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # stdout was closed early (`llmrouter models | head -1`): not an error worth a line.
        # Point stdout at devnull so the interpreter's final flush does not complain.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as exc:  # a bug: still one line, unless --debug
        report_error(exc, debug=args.debug, command=args.command, expected=False)
        return 1

"""``llmrouter chat``: one streamed answer, or an interactive session that keeps the conversation.

Without a prompt, lines are read from stdin until end of input or ``/exit``; each line is a user
turn, and every request carries the whole conversation so far. It works the same when stdin is a
pipe (``printf 'hi\\nand then?\\n' | llmrouter chat``), without the prompt and banner.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from typing import TYPE_CHECKING, Any

from llmrouter.cli.report import announce_loading, error, report_error, status

if TYPE_CHECKING:
    from llmrouter import Client

__all__ = ["add_parser", "run"]

_EXIT = ("/exit", "/quit")
_RESET = "/reset"


def add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    chat = sub.add_parser(
        "chat",
        parents=[common],
        help="stream an answer, or chat interactively (no PROMPT)",
        description="Stream one answer from the backend chain. Without PROMPT: an interactive "
        "session reading stdin line by line; /reset forgets the conversation, /exit (or end of "
        "input) leaves.",
    )
    chat.add_argument("prompt", nargs="?", help="the question (omit it for an interactive session)")
    chat.add_argument("--url", help="backend URLs (default: LLMROUTER_URL, ...)")
    chat.add_argument("--model", help="model name, where the backend does not pin one")
    chat.add_argument("--system", help="a system message")
    chat.add_argument("--temperature", type=float)
    chat.add_argument("--max-tokens", type=int, default=512)
    chat.add_argument(
        "--json",
        action="store_true",
        help="print the response JSON instead (one line per turn when interactive)",
    )


def run(args: argparse.Namespace) -> int:
    from llmrouter import Client
    from llmrouter.config import resolve_chain

    # In-process backends load their model on first use: the hook says so when that happens.
    chain = resolve_chain(args.url)
    in_process = [spec.name for group in chain for spec in group if not spec.base_url]
    hook = announce_loading(in_process, debug=args.debug)
    with Client(args.url, on_event=hook) as client:
        system = [{"role": "system", "content": args.system}] if args.system else []
        if args.prompt is not None:
            messages = [*system, {"role": "user", "content": args.prompt}]
            _turn(client, messages, args, indent=2, show_route=True)
            return 0
        return _interactive(client, system, args)


def _options(args: argparse.Namespace) -> dict[str, Any]:
    return {"model": args.model, "temperature": args.temperature, "max_tokens": args.max_tokens}


def _turn(
    client: Client,
    messages: list[dict[str, Any]],
    args: argparse.Namespace,
    *,
    indent: int | None,
    show_route: bool,
) -> tuple[str, str]:
    """Send the conversation; print the answer (or its JSON); return (answer, backend)."""
    if args.json:
        resp = client.chat.completions.create(messages=messages, **_options(args))
        print(json.dumps(resp.model_dump(exclude_unset=True), indent=indent), flush=True)
        return resp.choices[0].message.content or "", resp.route.backend
    parts: list[str] = []
    try:
        with client.chat.completions.create(
            messages=messages, stream=True, **_options(args)
        ) as stream:
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    parts.append(chunk.choices[0].delta.content)
                    sys.stdout.write(parts[-1])
                    sys.stdout.flush()
    except BaseException:
        if parts:  # end the partial answer's line, so the error starts on its own
            sys.stdout.write("\n")
            sys.stdout.flush()
        raise
    sys.stdout.write("\n")
    sys.stdout.flush()
    if show_route:
        print(f"[{stream.route.backend}]", file=sys.stderr, flush=True)
    return "".join(parts), stream.route.backend


def _read_line(tty: bool) -> str | None:
    """The next line of input, or ``None`` at the end of input."""
    if tty:
        try:
            return input("> ")
        except EOFError:
            print(file=sys.stderr)
            return None
    line = sys.stdin.readline()
    return line if line else None


def _interactive(client: Client, system: list[dict[str, Any]], args: argparse.Namespace) -> int:
    from llmrouter.errors import LLMRouterError

    tty = sys.stdin.isatty()
    if tty:
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401  (line editing and arrow-key history for input())
        status("interactive chat: /reset forgets the conversation, /exit or Ctrl-D leaves")
    history = list(system)
    last_backend = ""
    failed = False
    while (line := _read_line(tty)) is not None:
        text = line.strip()
        if not text:
            continue
        if text in _EXIT:
            break
        if text == _RESET:
            history = list(system)
            status("conversation forgotten")
            continue
        history.append({"role": "user", "content": text})
        try:
            answer, backend = _turn(client, history, args, indent=None, show_route=False)
        except LLMRouterError as exc:
            # The session goes on; the failed question is not part of the conversation.
            history.pop()
            report_error(exc, debug=args.debug, command="chat")
            failed = True
            continue
        except KeyboardInterrupt:
            history.pop()
            error("interrupted; the question was dropped")
            continue
        history.append({"role": "assistant", "content": answer})
        if backend != last_backend and not args.json:
            print(f"[{backend}]", file=sys.stderr, flush=True)
            last_backend = backend
    return 1 if failed else 0

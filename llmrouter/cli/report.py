"""What the command line says on stderr: one-line errors with a hint, progress, and events.

An error is one line (``llmrouter: NotFoundError: ...``) and a hint saying what to try; the
traceback appears only with ``--debug``. Progress ("loading model...") goes to stderr so that
stdout carries only the answer, the table or the JSON.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable, Iterable

from llmrouter.errors import (
    AllBackendsFailedError,
    AuthenticationError,
    BackendConnectionError,
    BackendTimeoutError,
    ConfigError,
    ContextLengthError,
    InvalidRequestError,
    MissingDependencyError,
    NotFoundError,
    RateLimitError,
    ServerError,
    StreamInterruptedError,
)
from llmrouter.events import Event

__all__ = ["announce_loading", "error", "hint_for", "one_line", "report_error", "status"]

# Most specific first: the first isinstance match gives the hint.
_HINTS: list[tuple[type[BaseException], str]] = [
    (ContextLengthError, "shorten the prompt or the conversation (/reset), or lower --max-tokens"),
    (AuthenticationError, "check the API key variable (OPENAI_API_KEY, ANTHROPIC_API_KEY, ...)"),
    (NotFoundError, "check the model name: `llmrouter models` lists what the backends serve"),
    (RateLimitError, "the backend is rate limiting: wait, or add another backend to the chain"),
    (BackendConnectionError, "is the server running at that address? `llmrouter check` probes"),
    (BackendTimeoutError, "the backend is slow or stuck: `llmrouter check`, or raise ?timeout="),
    (ServerError, "the backend failed on its side: its own logs say why"),
    (StreamInterruptedError, "the answer broke off midway; asking again usually works"),
    (AllBackendsFailedError, "`llmrouter check` shows which backends are down, and why"),
    (MissingDependencyError, "install the extra named above"),
    (InvalidRequestError, "fix the option named above (`llmrouter COMMAND --help`)"),
    (
        ConfigError,
        "check the backend URLs (--url or LLMROUTER_URL); docs/configuration.md lists the forms",
    ),
]


def one_line(exc: BaseException) -> str:
    """The error's message on one line (an AllBackendsFailedError lists its attempts)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return "; ".join(lines) if lines else type(exc).__name__


def hint_for(exc: BaseException, command: str = "") -> str | None:
    """What to try next, for the errors a user can do something about."""
    if command == "plan" and isinstance(exc, ConfigError):
        return "`llmrouter plan --list` shows the presets, precisions and GPUs; see --help"
    for kind, hint in _HINTS:
        if isinstance(exc, kind):
            return hint
    return None


def error(message: str) -> None:
    """Write one ``llmrouter: ...`` line to stderr."""
    print(f"llmrouter: {message}", file=sys.stderr, flush=True)


def status(message: str) -> None:
    """A progress line on stderr."""
    error(message)


def report_error(
    exc: BaseException, *, debug: bool, command: str = "", expected: bool = True
) -> None:
    """The error as one line plus a hint; with ``debug``, the traceback first."""
    if debug:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    if expected:
        error(f"{type(exc).__name__}: {one_line(exc)}")
        hint = hint_for(exc, command)
    else:
        error(f"internal error: {type(exc).__name__}: {one_line(exc)}")
        hint = "this is a bug in llmrouter; please report it with the --debug output"
    if not debug:
        hint = f"{hint} (--debug shows the traceback)" if hint else "--debug shows the traceback"
    if hint:
        print(f"  hint: {hint}", file=sys.stderr, flush=True)


def announce_loading(in_process: Iterable[str], *, debug: bool = False) -> Callable[[Event], None]:
    """An ``on_event`` hook: says "loading model..." when an in-process backend is first
    called (its engine loads then, which takes seconds), and with ``debug`` every event."""
    pending = set(in_process)

    def hook(event: Event) -> None:
        if debug:
            error(f"event: {event.message()}")
        if event.kind == "attempt_start" and event.backend in pending:
            pending.discard(event.backend)
            status(f"loading model {event.backend}\N{HORIZONTAL ELLIPSIS}")

    return hook

"""Events: what the router did, for hooks, metrics and logs. Never a secret in one.

Pass ``on_event=callable`` to a client to receive every :class:`Event`; the same facts go to
``logging.getLogger("llmrouter")`` (DEBUG for attempts and successes, INFO for retries,
failovers and breaker changes). Backends are named by their display names (URLs without
secrets); errors by their type and message, which never contain keys.

The events of one request share its ``request_id``: ``attempt_start`` (carrying the request,
the backend's spec and its breaker state), then ``failure`` / ``failover`` / ``retry`` /
``skip`` along the chain, ``first_token`` when a stream's first content reaches the caller, and
exactly one end: ``success`` (carrying the response, for a stream when it ends or is closed),
``give_up`` (the error goes to the caller) or ``abandoned`` (the caller stopped waiting).
:mod:`llmrouter.otel` builds its spans from these alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from llmrouter._accumulate import ChunkAccumulator
    from llmrouter._request import ChatRequest
    from llmrouter.backends.spec import BackendSpec
    from llmrouter.types import ChatCompletion

__all__ = ["Event", "EventKind", "EventSink", "Subscriber"]

EventKind = Literal[
    "attempt_start",  # a call to a backend begins
    "success",  # a backend served the request (for a stream: it opened)
    "failure",  # a backend failed this attempt
    "failover",  # the request moves to another backend
    "retry",  # the request waits, then tries the same backend again
    "skip",  # a backend was skipped without a call (its breaker is open)
    "breaker",  # a circuit breaker changed state (detail: "closed->open")
    "hedge",  # a hedged second request was sent
    "give_up",  # the request ends in an error: it goes to the caller
    "first_token",  # a stream's first content reached the caller (time to first token)
    "cancelled",  # a hedged attempt lost the race and was cancelled
    "abandoned",  # the caller stopped waiting (cancelled, interrupted): the request ends
]

logger = logging.getLogger("llmrouter")

_LEVELS = {
    "attempt_start": logging.DEBUG,
    "success": logging.DEBUG,
    "skip": logging.DEBUG,
    "first_token": logging.DEBUG,
    "cancelled": logging.DEBUG,
    "abandoned": logging.DEBUG,
}


@dataclass(frozen=True, slots=True)
class Event:
    """One thing the router did.

    Attributes:
        kind: what happened.
        backend: the backend's display name ("" when not about one backend).
        attempt: the 1-based attempt number within the request (0 when not about a request).
        elapsed_s: seconds since the request (or, for ``breaker``, nothing: 0) started.
        error: the error involved, if any.
        detail: a short note: the wait before a retry, a breaker transition, ...
        request_id: which request (unique in this process; 0 when not about a request).
        request: ``attempt_start`` and ``skip``: the request being sent.
        spec: ``attempt_start``: the backend's spec (its key is a redacted ``Secret``).
        breaker: ``attempt_start``: the backend's breaker state when the attempt was admitted
            (``"closed"``, ``"half_open"``; ``"open"`` for a forced probe).
        response: ``success``: the :class:`~llmrouter.types.ChatCompletion`, or for a stream
            what it delivered (``.text``, ``.model``, ``.usage``, ``.finish_reason``).
    """

    kind: EventKind
    backend: str = ""
    attempt: int = 0
    elapsed_s: float = 0.0
    error: BaseException | None = None
    detail: str = ""
    request_id: int = 0
    request: ChatRequest | None = None
    spec: BackendSpec | None = None
    breaker: str = ""
    response: ChatCompletion | ChunkAccumulator | None = None

    def message(self) -> str:
        """One log line."""
        text = f"{self.kind} {self.backend}".rstrip()
        if self.attempt:
            text += f" attempt={self.attempt}"
        if self.error is not None:
            text += (
                f" error={type(self.error).__name__}: {getattr(self.error, 'message', self.error)}"
            )
        if self.detail:
            text += f" {self.detail}"
        return text + f" ({self.elapsed_s * 1000:.1f} ms)"


class EventSink:
    """Sends events to the user's hook (if any) and to the ``llmrouter`` logger."""

    __slots__ = ("_hook",)

    def __init__(self, hook: Callable[[Event], None] | None = None) -> None:
        self._hook = hook

    @property
    def active(self) -> bool:
        """Whether anyone listens (skip building events on the hot path when not)."""
        return self._hook is not None or logger.isEnabledFor(logging.INFO)

    def emit(self, event: Event) -> None:
        if self._hook is not None:
            self._hook(event)
        level = _LEVELS.get(event.kind, logging.INFO)
        if logger.isEnabledFor(level):
            logger.log(level, "%s", event.message())


class Subscriber(Protocol):
    """Anything that takes every event of a client, such as :class:`llmrouter.otel.Telemetry`."""

    def on_event(self, event: Event) -> None: ...

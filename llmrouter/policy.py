"""Decisions about failing over and about time (pure: no I/O, the clock is injected).

The resilience work (retries, breakers, load balancing) grows here; the foundation needs two
decisions: whether an error moves the request to the next backend, and how much time is left.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from llmrouter.errors import (
    AuthenticationError,
    BackendError,
    BadRequestError,
    NotFoundError,
)

__all__ = ["Deadline", "fails_over"]

Clock = Callable[[], float]


def fails_over(error: BaseException) -> bool:
    """Whether ``error`` on one backend should move the request to the next one.

    Connection failures, timeouts, 429 and 5xx move on; so do 401/403 and 404 (another
    backend's key or model list may differ). Requests that any backend would reject (400, a
    request that failed validation) do not.
    """
    if not isinstance(error, BackendError) or isinstance(error, BadRequestError):
        return False
    return error.retryable or isinstance(error, (AuthenticationError, NotFoundError))


class Deadline:
    """A point in time after which a request gives up.

    Args:
        seconds: time allowed from now; ``None`` means no limit.
        clock: monotonic clock (injectable for tests).
    """

    __slots__ = ("_clock", "_end")

    def __init__(self, seconds: float | None, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._end = None if seconds is None else clock() + seconds

    def remaining(self) -> float | None:
        """Seconds left (never negative), or ``None`` without a limit."""
        if self._end is None:
            return None
        return max(self._end - self._clock(), 0.0)

    def expired(self) -> bool:
        """Whether the deadline has passed."""
        return self._end is not None and self._clock() >= self._end

    def cap(self, seconds: float | None) -> float | None:
        """``seconds`` limited to what is left (either may be ``None``: no limit)."""
        left = self.remaining()
        if left is None:
            return seconds
        return left if seconds is None else min(seconds, left)

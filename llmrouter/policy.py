"""The resilience policies, all pure: no I/O, no event loop, the clock injected.

* :class:`RetryPolicy` — how many retries, how long to back off (full-jitter exponential),
  when a server's Retry-After is honoured, the total deadline, which errors are retryable.
* :class:`CircuitBreaker` — closed / open / half-open, per backend.
* :class:`RetryBudget` — retries and hedges stay a fraction of recent traffic.
* :class:`Balancer` — the order replicas of a group are tried in.
* :class:`Deadline` — how much time a request has left.

:mod:`llmrouter.execution` applies them to one request, step by step (which error fails over,
what the breakers learn); the routers perform its steps and decide nothing themselves.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from llmrouter.errors import (
    BackendConnectionError,
    BackendError,
    BackendTimeoutError,
    RateLimitError,
    ServerError,
    StatusError,
)

__all__ = [
    "Balancer",
    "BreakerState",
    "CircuitBreaker",
    "Deadline",
    "RetryBudget",
    "RetryPolicy",
]

Clock = Callable[[], float]


DEFAULT_RETRYABLE: tuple[type[BackendError], ...] = (
    BackendConnectionError,
    BackendTimeoutError,
    RateLimitError,
    ServerError,
)


@dataclass(frozen=True)
class RetryPolicy:
    """When and how long to wait before trying a backend again. Read it, copy it, replace it.

    Retrying the *same* backend is the last resort: a failed attempt first moves to the next
    healthy backend at once; only when none is left does the router back off and retry.

    Attributes:
        max_retries: retries per backend after its first attempt (default 2).
        initial_backoff: first backoff in seconds (default 0.5); it doubles each retry...
        max_backoff: ...up to this cap (default 8 s), with full jitter.
        total_timeout: deadline for the whole request, retries and failover included (60 s).
        retry_after_cap: the longest server-requested wait honoured (10 s); a longer one makes
            the router fail over instead of sleeping.
        retryable: the error types that may be retried on the same backend. A
            :class:`StatusError` whose ``retryable`` flag is set (408, 409, ``x-should-retry:
            true``) is retryable too, and ``x-should-retry: false`` vetoes a retry.
    """

    max_retries: int = 2
    initial_backoff: float = 0.5
    max_backoff: float = 8.0
    total_timeout: float | None = 60.0
    retry_after_cap: float = 10.0
    retryable: tuple[type[BaseException], ...] = DEFAULT_RETRYABLE

    @classmethod
    def testing(cls, max_retries: int = 2, total_timeout: float | None = 60.0) -> RetryPolicy:
        """A policy with zero waits, for users' own tests."""
        return cls(
            max_retries=max_retries,
            initial_backoff=0.0,
            max_backoff=0.0,
            retry_after_cap=0.0,
            total_timeout=total_timeout,
        )

    def with_max_retries(self, max_retries: int | None) -> RetryPolicy:
        """This policy with a per-backend ``max_retries`` override (``None``: unchanged)."""
        if max_retries is None or max_retries == self.max_retries:
            return self
        from dataclasses import replace

        return replace(self, max_retries=max_retries)

    def is_retryable(self, error: BaseException) -> bool:
        """Whether the same backend may be tried again after ``error``."""
        if isinstance(error, StatusError):
            if error.should_retry is not None:  # the server's x-should-retry has the last word
                return error.should_retry
            if error.retryable:
                return True
        return isinstance(error, self.retryable)

    def backoff(self, retry_number: int) -> float:
        """Seconds to wait before retry ``retry_number`` (1-based): full jitter, uniform in
        ``[0, min(initial_backoff * 2 ** (n - 1), max_backoff)]`` (the formula of tenacity's
        ``wait_random_exponential``; ``docs/resilience.md`` says why it is computed here)."""
        if self.initial_backoff <= 0 or self.max_backoff <= 0:
            return 0.0
        ceiling = self.initial_backoff * 2.0 ** min(retry_number - 1, 64)
        return random.uniform(0.0, min(ceiling, self.max_backoff))

    def server_wait(self, error: BaseException) -> float | None:
        """The wait a server asked for, if it is short enough to honour; else ``None``."""
        retry_after = getattr(error, "retry_after", None)
        if retry_after is None or retry_after > self.retry_after_cap:
            return None
        return float(retry_after)

    def asks_too_long(self, error: BaseException) -> bool:
        """The server asked for a wait longer than the cap: fail over, do not sleep."""
        retry_after = getattr(error, "retry_after", None)
        return retry_after is not None and retry_after > self.retry_after_cap


BreakerState = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    """Per-backend circuit breaker.

    Closed: calls flow; it opens after ``failure_threshold`` consecutive failures, or when the
    failure rate over the last ``window`` outcomes reaches ``failure_rate`` (with at least
    ``min_calls`` outcomes). Open: calls are refused until ``cooldown`` seconds have passed.
    Half-open: exactly one probe call is let through; its success closes the breaker, its
    failure opens it again for another cooldown.

    Outcomes of calls admitted before the breaker last opened are ignored (pass the
    :attr:`generation` read at admission): under concurrency, a slow call that started while
    the backend looked healthy must not close a breaker that just opened, and only the probe's
    outcome decides a half-open breaker.

    Thread-safe: one breaker is shared by every request of a client.
    """

    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        failure_rate: float = 0.5,
        window: int = 20,
        min_calls: int = 10,
        cooldown: float = 30.0,
        clock: Clock = time.monotonic,
        on_change: Callable[[BreakerState, BreakerState], None] | None = None,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.failure_rate = failure_rate
        self.min_calls = min_calls
        self.cooldown = cooldown
        self._clock = clock
        self._on_change = on_change
        self._outcomes: deque[bool] = deque(maxlen=window)
        self._consecutive = 0
        self._state: BreakerState = "closed"
        self._opened_at = 0.0
        self._probe_out = False
        self._generation = 0
        self._lock = threading.Lock()

    @property
    def generation(self) -> int:
        """Changes each time the breaker opens; read it when admitting a call."""
        return self._generation

    @property
    def state(self) -> BreakerState:
        """The state now (an open breaker past its cooldown reads as half-open)."""
        with self._lock:
            return self._current()

    def _current(self) -> BreakerState:
        if self._state == "open" and self._clock() - self._opened_at >= self.cooldown:
            self._set("half_open")
        return self._state

    def _set(self, state: BreakerState) -> None:
        old, self._state = self._state, state
        if state == "open":
            self._generation += 1
        if state == "half_open":
            self._probe_out = False
        if old != state and self._on_change is not None:
            self._on_change(old, state)

    def cooldown_remaining(self) -> float:
        """Seconds until an open breaker lets a probe through (0 when not open)."""
        with self._lock:
            if self._current() != "open":
                return 0.0
            return max(self.cooldown - (self._clock() - self._opened_at), 0.0)

    def allow(self) -> bool:
        """May a call go to this backend now? In half-open, only the first caller gets ``True``."""
        with self._lock:
            state = self._current()
            if state == "closed":
                return True
            if state == "half_open" and not self._probe_out:
                self._probe_out = True
                return True
            return False

    def force_probe(self) -> bool:
        """Let one call through now (every backend is open: try the soonest one).

        Returns ``True``: the call may go. (A breaker shared across processes may answer
        ``False`` when another process holds the cluster's one probe.)
        """
        with self._lock:
            if self._current() == "open":
                self._set("half_open")
            self._probe_out = True
            return True

    def trip(self, cooldown: float | None = None) -> None:
        """Open now (an active health probe found the backend down, or another process
        sharing this breaker opened it); ``cooldown``: seconds left open (default: all of it)."""
        with self._lock:
            left = self.cooldown if cooldown is None else min(max(cooldown, 0.0), self.cooldown)
            self._opened_at = self._clock() - (self.cooldown - left)
            if self._current() != "open":
                self._set("open")

    def record_success(self, generation: int | None = None) -> None:
        """A call succeeded (``generation``: as read when it was admitted)."""
        with self._lock:
            if generation is not None and generation != self._generation:
                return
            self._outcomes.append(True)
            self._consecutive = 0
            if self._current() != "closed":
                self._outcomes.clear()
                self._set("closed")

    def record_failure(self, generation: int | None = None) -> None:
        """A call failed (``generation``: as read when it was admitted)."""
        with self._lock:
            if generation is not None and generation != self._generation:
                return
            self._outcomes.append(False)
            self._consecutive += 1
            state = self._current()
            if state == "half_open" or (state == "closed" and self._should_open()):
                self._opened_at = self._clock()
                self._set("open")

    def _should_open(self) -> bool:
        if self._consecutive >= self.failure_threshold:
            return True
        n = len(self._outcomes)
        failures = n - sum(self._outcomes)
        return n >= self.min_calls and failures / n >= self.failure_rate


class RetryBudget:
    """Retries and hedges may add at most ``ratio`` of recent requests, plus a floor.

    Every request deposits ``ratio`` tokens (kept for ``ttl`` seconds); every retry or hedge
    withdraws one. ``min_per_second`` tokens per second are always available, so a quiet client
    can still retry. During an outage a dead backend can thus add at most 20 % more load.
    """

    def __init__(
        self,
        *,
        ratio: float = 0.2,
        min_per_second: float = 10.0,
        ttl: float = 10.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self.ratio = ratio
        self.min_per_second = min_per_second
        self.ttl = ttl
        self._clock = clock
        self._requests: deque[float] = deque()
        self._spent: deque[float] = deque()
        self._lock = threading.Lock()

    def _trim(self, now: float) -> None:
        horizon = now - self.ttl
        while self._requests and self._requests[0] < horizon:
            self._requests.popleft()
        while self._spent and self._spent[0] < horizon:
            self._spent.popleft()

    def record_request(self) -> None:
        """A new request (not a retry) started."""
        with self._lock:
            now = self._clock()
            self._requests.append(now)
            if len(self._requests) > 4096:
                self._trim(now)

    def available(self) -> float:
        """Retries that may still be spent now."""
        with self._lock:
            return self._available(self._clock())

    def _available(self, now: float) -> float:
        self._trim(now)
        allowed = self.ratio * len(self._requests) + self.min_per_second * self.ttl
        return allowed - len(self._spent)

    def try_spend(self) -> bool:
        """Take one retry from the budget; ``False`` when it is exhausted."""
        with self._lock:
            now = self._clock()
            if self._available(now) < 1:
                return False
            self._spent.append(now)
            return True

    def stats(self) -> dict[str, float]:
        """Requests and retries in the window, and what is left."""
        with self._lock:
            now = self._clock()
            self._trim(now)
            return {
                "requests": len(self._requests),
                "retries": len(self._spent),
                "available": self._available(now),
            }


Strategy = Literal["least_outstanding", "round_robin", "latency"]


class Balancer:
    """Orders the replicas of one group for a request.

    ``least_outstanding`` (default) picks the replica with the fewest requests in flight per
    unit of weight; ``round_robin`` rotates (weighted by repetition); ``latency`` prefers the
    lowest exponentially weighted moving average of observed latency (unknown first). The rest
    of the group follows in the same order of preference, for failover inside the group.
    """

    def __init__(
        self,
        weights: Sequence[float],
        strategy: Strategy = "least_outstanding",
        *,
        alpha: float = 0.3,
    ) -> None:
        if strategy not in ("least_outstanding", "round_robin", "latency"):
            raise ValueError(f"unknown balancing strategy {strategy!r}")
        self.strategy: Strategy = strategy
        self.weights = [max(w, 1e-9) for w in weights]
        self.outstanding = [0] * len(weights)
        self.latency: list[float | None] = [None] * len(weights)
        self._alpha = alpha
        self._counter = 0
        self._lock = threading.Lock()
        # Weighted round robin: each replica appears in proportion to its (integer) weight.
        self._ring = [i for i, w in enumerate(self.weights) for _ in range(max(round(w), 1))]

    def order(self) -> list[int]:
        """Replica indexes, most preferred first."""
        n = len(self.weights)
        if n == 1:
            return [0]
        with self._lock:
            if self.strategy == "round_robin":
                first = self._ring[self._counter % len(self._ring)]
                self._counter += 1
                return [first] + [(first + k) % n for k in range(1, n)]
            if self.strategy == "latency":
                return sorted(range(n), key=self._latency_key)
            return sorted(range(n), key=lambda i: (self.outstanding[i] / self.weights[i], i))

    def order_with(
        self, latency: Sequence[tuple[float, int]], outstanding: Sequence[float]
    ) -> list[int]:
        """:meth:`order`, with other processes' view of the same replicas added (a balancer
        shared through a state store).

        ``latency[i]``: the sum and the number of the other processes' latency estimates for
        replica ``i``; the estimate used is their mean with this process's own (one vote each).
        ``outstanding[i]``: their requests in flight on it, added to this process's.
        ``round_robin`` ignores both.
        """
        n = len(self.weights)
        if n == 1 or self.strategy == "round_robin":
            return self.order()
        with self._lock:
            if self.strategy == "latency":

                def key(i: int) -> tuple[float, int]:
                    total, count = latency[i]
                    own = self.latency[i]
                    if own is not None:
                        total, count = total + own, count + 1
                    return ((-1.0 if count == 0 else total / count / self.weights[i]), i)

                return sorted(range(n), key=key)
            return sorted(
                range(n),
                key=lambda i: ((self.outstanding[i] + outstanding[i]) / self.weights[i], i),
            )

    def _latency_key(self, i: int) -> tuple[float, int]:
        value = self.latency[i]
        return ((-1.0 if value is None else value / self.weights[i]), i)

    def started(self, i: int) -> None:
        with self._lock:
            self.outstanding[i] += 1

    def finished(self, i: int, latency: float | None) -> None:
        with self._lock:
            self.outstanding[i] -= 1
            if latency is not None:
                old = self.latency[i]
                self.latency[i] = latency if old is None else old + self._alpha * (latency - old)


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

    def child(self, seconds: float | None) -> Deadline:
        """A deadline no later than this one and no later than ``seconds`` from now."""
        return Deadline(self.cap(seconds), self._clock)


def describe_policy(policy: RetryPolicy) -> dict[str, Any]:
    """The policy's settings as plain values (for docs and ``check`` output)."""
    return {
        "max_retries": policy.max_retries,
        "initial_backoff": policy.initial_backoff,
        "max_backoff": policy.max_backoff,
        "total_timeout": policy.total_timeout,
        "retry_after_cap": policy.retry_after_cap,
        "retryable": [t.__name__ for t in policy.retryable],
    }

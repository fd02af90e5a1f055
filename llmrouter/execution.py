"""One request's way along the backend chain, decided step by step: sans-IO, clock injected.

The router (``_async/router.py``, and the sync twin generated from it) is a driver: it asks
:func:`next_step` what to do, performs it, and hands what happened to :func:`record`::

    ex = start(request, order, policy=..., budget=..., events=..., clock=...)
    while True:
        step = next_step(ex)            # Call(attempt) | Wait(seconds) | GiveUp(error)
        ...perform it...                # call the backend / sleep / raise step.error
        record(ex, attempt, error)      # error=None: it succeeded

Everything else lives here, and nowhere else: which member is called next (untried ones
first, breaker-open ones skipped, the forced probe when nothing healthy is left, retries after
a wait), whether an error fails over, retries or ends the request (:func:`decide`), how long to
wait (Retry-After, backoff, the retry budget, the deadline), what the breakers and balancers
learn, and the route and events the caller sees. Hedging (``llmrouter/_hedge.py``) and streams
(``_async/stream.py``) drive the same functions. ``docs/resilience.md`` draws the states and the
table of error -> decision.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from llmrouter._accumulate import ChunkAccumulator
from llmrouter._request import ChatRequest
from llmrouter.backends.spec import BackendSpec
from llmrouter.errors import (
    AllBackendsFailedError,
    AuthenticationError,
    BackendConnectionError,
    BackendError,
    BackendTimeoutError,
    BadRequestError,
    ContextLengthError,
    InvalidRequestError,
    NotFoundError,
    RateLimitError,
    ServerError,
)
from llmrouter.events import Event, EventSink
from llmrouter.policy import Balancer, CircuitBreaker, Deadline, RetryBudget, RetryPolicy
from llmrouter.route import Attempt, Route

if TYPE_CHECKING:
    from llmrouter.state.shared import SharedBalancer, SharedBreaker, SharedBudget
    from llmrouter.types import ChatCompletion

__all__ = [
    "BackendInfo",
    "BreakerOpenError",
    "Call",
    "Decision",
    "Execution",
    "GiveUp",
    "HedgeLostError",
    "Member",
    "Step",
    "Try",
    "Wait",
    "abandoned",
    "cancelled",
    "decide",
    "fails_over",
    "first_content",
    "hedge",
    "hurts_health",
    "next_step",
    "record",
    "start",
]


# -- the error table ------------------------------------------------------------------------

_FAIL_OVER = (
    BackendConnectionError,
    BackendTimeoutError,
    RateLimitError,
    ServerError,
    AuthenticationError,
    NotFoundError,
)

# Failures that say something about the backend's health (a 400 or a 404 does not).
_UNHEALTHY = (
    BackendConnectionError,
    BackendTimeoutError,
    ServerError,
    RateLimitError,
    AuthenticationError,
)


def fails_over(error: BaseException) -> bool:
    """Whether ``error`` on one backend should move the request to another one.

    Connection failures, timeouts, 429 and 5xx (529 included) move on; so do 401/403 and 404
    (another backend's key or model list may differ), and any other :class:`BackendError`
    whose ``retryable`` flag is set (a malformed stream, a 408). Requests that any backend would
    reject (a 400, a request that failed validation) do not. ``x-should-retry: false`` forbids
    a retry on the same backend, not a move to another one.
    """
    if not isinstance(error, BackendError) or isinstance(error, BadRequestError):
        return False
    return isinstance(error, _FAIL_OVER) or error.retryable


def hurts_health(error: BaseException) -> bool:
    """Whether ``error`` counts against the backend's circuit breaker."""
    return isinstance(error, _UNHEALTHY)


@dataclass(frozen=True, slots=True)
class Decision:
    """What one error means for the request (see :func:`decide`)."""

    fails_over: bool  # another backend may take the request now
    retryable: bool  # this backend may be tried again later, after a wait
    hurts_health: bool  # the breaker counts it as a failure
    skip: bool = False  # nothing was sent: the backend cannot serve this request as asked
    larger_context_only: bool = False  # only a backend declaring a larger context may take it


def decide(error: BaseException, policy: RetryPolicy) -> Decision:
    """The row of the error table for ``error`` under ``policy`` (``docs/resilience.md``)."""
    if isinstance(error, InvalidRequestError):
        return Decision(fails_over=True, retryable=False, hurts_health=False, skip=True)
    if isinstance(error, ContextLengthError):
        return Decision(
            fails_over=True, retryable=False, hurts_health=False, larger_context_only=True
        )
    return Decision(
        fails_over=fails_over(error),
        retryable=policy.is_retryable(error) and not policy.asks_too_long(error),
        hurts_health=hurts_health(error),
    )


# -- the chain ------------------------------------------------------------------------------


class BackendInfo(Protocol):
    """What the execution reads of a backend (the drivers call the rest)."""

    @property
    def name(self) -> str: ...

    @property
    def spec(self) -> BackendSpec: ...

    @property
    def max_context(self) -> int | None: ...


B = TypeVar("B", bound=BackendInfo)


class BreakerOpenError(BackendError):
    """Recorded in the route for a backend skipped because its circuit breaker is open."""


class HedgeLostError(BackendError):
    """Recorded in the route for a hedged attempt cancelled because another one won."""

    retryable = False


@dataclass(eq=False)
class Member(Generic[B]):
    """One backend in the chain, with its breaker and its place in a balanced group."""

    backend: B
    breaker: CircuitBreaker | SharedBreaker  # shared across processes with a state store
    balancer: Balancer | SharedBalancer  # shared across processes with a state store
    index: int  # within its group

    @property
    def name(self) -> str:
        return self.backend.name

    @property
    def spec(self) -> BackendSpec:
        return self.backend.spec


@dataclass(eq=False, slots=True)
class Try(Generic[B]):
    """One attempt in flight: on which backend, since when, within which deadline."""

    member: Member[B]
    started: float
    deadline: Deadline
    number: int
    generation: int  # of the member's breaker when this attempt was admitted


@dataclass(eq=False)
class Execution(Generic[B]):
    """One request's way through the chain: what is left to try, and what happened."""

    request: ChatRequest
    deadline: Deadline
    pending: deque[Member[B]]  # untried, in order
    policy: RetryPolicy
    budget: RetryBudget | SharedBudget
    events: EventSink
    clock: Callable[[], float]
    route: Route = field(default_factory=Route)
    started: float = 0.0
    failed: list[tuple[Member[B], BaseException]] = field(default_factory=list)
    skipped: list[Member[B]] = field(default_factory=list)  # breaker open, not yet probed
    retries: dict[int, int] = field(default_factory=dict)  # by id(member)
    calls: int = 0
    scheduled: Member[B] | None = None  # a retry, called once its Wait has been served
    outcome: GiveUp | None = None  # set once the request has ended in an error
    request_id: int = field(default_factory=itertools.count(1).__next__)  # in its events

    def elapsed(self) -> float:
        return self.clock() - self.started


# -- the steps ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Call(Generic[B]):
    """Call ``attempt.member.backend`` within ``attempt.deadline``, then :func:`record` it."""

    attempt: Try[B]


@dataclass(frozen=True, slots=True)
class Wait:
    """Sleep this long, then ask :func:`next_step` again (a retry is scheduled)."""

    seconds: float


@dataclass(frozen=True, slots=True)
class GiveUp:
    """The request ends: raise ``error``."""

    error: BaseException


Step = Call[B] | Wait | GiveUp


def start(
    request: ChatRequest,
    order: deque[Member[B]],
    *,
    policy: RetryPolicy,
    budget: RetryBudget | SharedBudget,
    events: EventSink,
    clock: Callable[[], float],
) -> Execution[B]:
    """A new request over the members in ``order`` (the balancers' current preference)."""
    total = request.timeout if request.timeout is not None else policy.total_timeout
    if request.max_retries is not None:  # with_options(max_retries=)
        policy = policy.with_max_retries(request.max_retries)
    budget.record_request()
    deadline = Deadline(total, clock)
    return Execution(request, deadline, order, policy, budget, events, clock, started=clock())


def next_step(ex: Execution[B]) -> Step[B]:
    """What to do now: call a member, wait before a retry, or give up."""
    if ex.outcome is not None:
        return ex.outcome
    if ex.scheduled is not None:  # the wait before this retry has been served
        member, ex.scheduled = ex.scheduled, None
        return _give_up(ex) if ex.deadline.expired() else Call(_begin(ex, member))
    while ex.pending:
        member = ex.pending.popleft()
        if member.breaker.allow():
            return Call(_begin(ex, member))
        ex.skipped.append(member)
        wait = member.breaker.cooldown_remaining()
        error = BreakerOpenError(f"circuit breaker open ({wait:.1f} s left)", backend=member.name)
        ex.route.attempts.append(Attempt(member.name, error, 0.0, skipped=True))
        ex.events.emit(
            Event(
                "skip",
                member.name,
                elapsed_s=ex.elapsed(),
                error=error,
                request_id=ex.request_id,
                request=ex.request,
            )
        )
    if ex.skipped and (ex.calls == 0 or ex.budget.try_spend()):
        # Nothing healthy is left: rather than fail without a call, probe the open backend
        # whose cooldown ends first. The first such probe is free; later ones in the same
        # request spend the retry budget, so a full outage cannot multiply load.
        member = min(ex.skipped, key=lambda m: m.breaker.cooldown_remaining())
        ex.skipped.remove(member)
        if member.breaker.force_probe():  # a shared breaker: unless another process probes
            return Call(_begin(ex, member))
    choice = _retry_choice(ex)
    if choice is None:
        return _give_up(ex)
    member, wait = choice
    remaining = ex.deadline.remaining()
    if remaining is not None and wait >= remaining:
        return _give_up(ex)
    if not ex.budget.try_spend():
        return _give_up(ex, detail="retry budget exhausted")
    ex.retries[id(member)] = ex.retries.get(id(member), 0) + 1
    ex.events.emit(
        Event(
            "retry",
            member.name,
            ex.calls + 1,
            ex.elapsed(),
            detail=f"after {wait:.3f} s",
            request_id=ex.request_id,
        )
    )
    if wait > 0:
        ex.scheduled = member
        return Wait(wait)
    return _give_up(ex) if ex.deadline.expired() else Call(_begin(ex, member))


def record(
    ex: Execution[B],
    attempt: Try[B],
    error: BackendError | InvalidRequestError | None = None,
    *,
    after_content: bool = False,
    response: ChatCompletion | ChunkAccumulator | None = None,
) -> GiveUp | None:
    """What happened to ``attempt``: ``None`` for a success, else the error it raised.

    ``after_content``: a stream failed after content reached the caller; it is recorded, and
    the request ends (resending would duplicate what the caller has). ``response``: on
    success, what was answered (for the ``success`` event: telemetry reads the model, usage
    and finish reasons there). Returns the :class:`GiveUp` when the request must end here
    (:func:`next_step` returns it too).
    """
    if error is None:
        _succeeded(ex, attempt, response)
        return None
    if isinstance(error, InvalidRequestError):
        return _unsupported(ex, attempt, error)
    decision = decide(error, ex.policy)
    _record_failure(ex, attempt, error, decision.hurts_health)
    if after_content:
        return _end(ex, error)
    ex.route.backend = ""
    member = attempt.member
    if decision.larger_context_only:
        # Only a backend that declares a larger context can take this prompt; the same prompt
        # will not fit on a retry either, so the error is not kept among the retryable ones.
        floor = member.backend.max_context or 0
        ex.pending = deque(m for m in ex.pending if (m.backend.max_context or 0) > floor)
        if not ex.pending:
            return _end(ex, error)
    elif not decision.fails_over:
        return _end(ex, error)
    else:
        ex.failed.append((member, error))
    if ex.deadline.expired():
        return _give_up(ex, error)
    ex.events.emit(
        Event(
            "failover", member.name, attempt.number, ex.elapsed(), error, request_id=ex.request_id
        )
    )
    return None


def cancelled(ex: Execution[B], attempt: Try[B]) -> None:
    """A hedged attempt lost the race and was cancelled (not the backend's fault)."""
    member = attempt.member
    member.balancer.finished(member.index, None)
    error = HedgeLostError("cancelled: another backend answered first", backend=member.name)
    ex.route.attempts.append(Attempt(member.name, error, ex.clock() - attempt.started))
    if ex.events.active:
        ex.events.emit(
            Event(
                "cancelled",
                member.name,
                attempt.number,
                ex.elapsed(),
                error,
                request_id=ex.request_id,
            )
        )


def abandoned(ex: Execution[B], attempt: Try[B]) -> None:
    """The caller stopped waiting for ``attempt`` (cancelled, interrupted): it is no longer
    in flight; neither the breaker nor the latency estimate learns anything from it."""
    attempt.member.balancer.finished(attempt.member.index, None)
    if ex.events.active:
        ex.events.emit(
            Event(
                "abandoned",
                attempt.member.name,
                attempt.number,
                ex.elapsed(),
                request_id=ex.request_id,
            )
        )


def first_content(ex: Execution[B], attempt: Try[B]) -> None:
    """A stream's first content reached the caller (its time to first token)."""
    if ex.events.active:
        ex.events.emit(
            Event(
                "first_token",
                attempt.member.name,
                attempt.number,
                ex.elapsed(),
                request_id=ex.request_id,
            )
        )


def hedge(ex: Execution[B], delay: float) -> bool:
    """May a hedged attempt start now, ``delay`` s after the first? It spends the budget."""
    if not ex.budget.try_spend():
        return False
    ex.events.emit(
        Event(
            "hedge",
            elapsed_s=ex.elapsed(),
            detail=f"after {delay:.3f} s",
            request_id=ex.request_id,
        )
    )
    return True


# -- the rules behind the steps ---------------------------------------------------------------


def _begin(ex: Execution[B], member: Member[B]) -> Try[B]:
    ex.calls += 1
    member.balancer.started(member.index)
    if ex.events.active:
        ex.events.emit(
            Event(
                "attempt_start",
                member.name,
                ex.calls,
                ex.elapsed(),
                request_id=ex.request_id,
                request=ex.request,
                spec=member.spec,
                breaker=member.breaker.state,
            )
        )
    deadline = ex.deadline.child(member.spec.timeouts.total)
    return Try(member, ex.clock(), deadline, ex.calls, member.breaker.generation)


def _retry_choice(ex: Execution[B]) -> tuple[Member[B], float] | None:
    """Among the failed backends, the retryable one that can go soonest."""
    best: tuple[Member[B], float] | None = None
    seen: set[int] = set()
    for member, error in reversed(ex.failed):  # each backend's latest error
        if id(member) in seen:
            continue
        seen.add(id(member))
        policy = ex.policy.with_max_retries(member.spec.max_retries)
        if ex.retries.get(id(member), 0) >= policy.max_retries:
            continue
        if not decide(error, policy).retryable:
            continue
        if member.breaker.state == "open":
            continue
        wait = policy.server_wait(error)
        if wait is None:
            wait = policy.backoff(ex.retries.get(id(member), 0) + 1)
        if best is None or wait < best[1]:
            best = (member, wait)
    return best


def _give_up(ex: Execution[B], last: BaseException | None = None, detail: str = "") -> GiveUp:
    failures = [a.error for a in ex.route.attempts if a.error is not None and not a.skipped]
    if failures and len({a.backend for a in ex.route.attempts}) == 1:
        # One backend (perhaps retried): its own typed error says it best.
        return _end(ex, failures[-1], detail)
    if ex.deadline.expired() and last is None:
        timeout = BackendTimeoutError(
            f"total deadline of {ex.policy.total_timeout} s passed", retryable=False
        )
        ex.route.attempts.append(Attempt("(deadline)", timeout, 0.0))
    return _end(ex, AllBackendsFailedError(ex.route.attempts), detail)


def _end(ex: Execution[B], error: BaseException, detail: str = "") -> GiveUp:
    """The request ends in ``error``, which goes to the caller: its one ``give_up`` event."""
    ex.events.emit(
        Event(
            "give_up", elapsed_s=ex.elapsed(), error=error, detail=detail, request_id=ex.request_id
        )
    )
    ex.outcome = GiveUp(error)
    return ex.outcome


def _unsupported(ex: Execution[B], attempt: Try[B], error: InvalidRequestError) -> GiveUp | None:
    """This backend cannot serve the request as asked (a capability it lacks, refused before
    sending): skip it, never drop the feature. Give up when no backend is left."""
    member = attempt.member
    member.balancer.finished(member.index, None)
    ex.calls -= 1  # nothing was sent
    ex.route.attempts.append(Attempt(member.name, error, 0.0, skipped=True))
    ex.events.emit(
        Event(
            "skip",
            member.name,
            attempt.number,
            ex.elapsed(),
            error,
            request_id=ex.request_id,
            request=ex.request,
        )
    )
    if ex.pending:
        return None
    if not any(not a.skipped for a in ex.route.attempts):
        return _end(ex, error)
    return _give_up(ex)


def _record_failure(
    ex: Execution[B], attempt: Try[B], error: BackendError, unhealthy: bool
) -> None:
    member = attempt.member
    member.balancer.finished(member.index, None)
    ex.route.attempts.append(Attempt(member.name, error, ex.clock() - attempt.started))
    if unhealthy:
        member.breaker.record_failure(attempt.generation)
    ex.events.emit(
        Event("failure", member.name, attempt.number, ex.elapsed(), error, request_id=ex.request_id)
    )


def _succeeded(
    ex: Execution[B], attempt: Try[B], response: ChatCompletion | ChunkAccumulator | None
) -> None:
    member = attempt.member
    latency = ex.clock() - attempt.started
    member.balancer.finished(member.index, latency)
    ex.route.attempts.append(Attempt(member.name, None, latency))
    ex.route.backend = member.name
    member.breaker.record_success(attempt.generation)
    if ex.events.active:
        ex.events.emit(
            Event(
                "success",
                member.name,
                attempt.number,
                ex.elapsed(),
                request_id=ex.request_id,
                response=response,
            )
        )

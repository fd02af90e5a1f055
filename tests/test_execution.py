"""The execution module alone: every step of a request's way along the chain, decided with no
socket, no event loop and no sleep (the clock is a number the test moves)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import pytest

from llmrouter import errors
from llmrouter._request import ChatRequest, build_request
from llmrouter.backends.spec import BackendSpec
from llmrouter.events import Event, EventSink
from llmrouter.execution import (
    BreakerOpenError,
    Call,
    Execution,
    GiveUp,
    Member,
    Try,
    Wait,
    abandoned,
    cancelled,
    decide,
    hedge,
    next_step,
    record,
    start,
)
from llmrouter.policy import Balancer, CircuitBreaker, RetryBudget, RetryPolicy


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeBackend:
    name: str
    spec: BackendSpec = field(init=False)
    max_context: int | None = None
    max_retries: int | None = None

    def __post_init__(self) -> None:
        self.spec = BackendSpec("http", "http", self.name, max_retries=self.max_retries)


@dataclass
class Chain:
    clock: Clock
    members: list[Member[FakeBackend]]
    events: list[Event]
    budget: RetryBudget
    policy: RetryPolicy

    def run(self, request: ChatRequest | None = None) -> Execution[FakeBackend]:
        return start(
            request or build_request([{"role": "user", "content": "hi"}], False, {}),
            deque(self.members),
            policy=self.policy,
            budget=self.budget,
            events=EventSink(self.events.append),
            clock=self.clock,
        )

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]


def chain(
    *names: str,
    policy: RetryPolicy | None = None,
    threshold: int = 5,
    max_context: dict[str, int] | None = None,
) -> Chain:
    clock = Clock()
    members = [
        Member(
            FakeBackend(name, (max_context or {}).get(name)),
            CircuitBreaker(failure_threshold=threshold, cooldown=30, clock=clock),
            Balancer([1.0]),
            0,
        )
        for name in names
    ]
    budget = RetryBudget(clock=clock)
    return Chain(clock, members, [], budget, policy or RetryPolicy.testing())


def call(ex: Execution[FakeBackend]) -> Try[FakeBackend]:
    step = next_step(ex)
    assert isinstance(step, Call), step
    return step.attempt


def status(cls: type[errors.StatusError], code: int, **kw: object) -> errors.StatusError:
    return cls("x", status_code=code, **kw)  # type: ignore[arg-type]


def test_untried_backends_go_first_then_the_request_succeeds() -> None:
    c = chain("a", "b")
    ex = c.run()
    t = call(ex)
    assert t.member.name == "a" and t.number == 1
    c.clock.now += 0.25
    assert record(ex, t, errors.BackendConnectionError("refused", backend="a")) is None
    t = call(ex)
    assert t.member.name == "b"
    c.clock.now += 0.5
    assert record(ex, t) is None
    assert ex.route.backend == "b"
    assert [(a.backend, a.duration_s) for a in ex.route.attempts] == [("a", 0.25), ("b", 0.5)]
    assert c.kinds() == ["attempt_start", "failure", "failover", "attempt_start", "success"]
    assert c.members[1].balancer.latency == [0.5]
    assert c.members[0].balancer.outstanding == c.members[1].balancer.outstanding == [0]


def test_a_request_any_backend_would_reject_ends_at_once() -> None:
    c = chain("a", "b")
    ex = c.run()
    error = status(errors.BadRequestError, 400)
    verdict = record(ex, call(ex), error)
    assert verdict == GiveUp(error)
    assert next_step(ex) == GiveUp(error)  # and stays ended
    assert c.members[0].breaker.state == "closed"


def test_retries_come_after_failover_and_wait_for_retry_after() -> None:
    c = chain("a", "b", policy=RetryPolicy(max_retries=1, retry_after_cap=10))
    ex = c.run()
    record(ex, call(ex), status(errors.RateLimitError, 429, retry_after=3.0))
    record(ex, call(ex), status(errors.ServerError, 503, retry_after=1.0))
    assert next_step(ex) == Wait(1.0)  # b asked for the shorter wait
    c.clock.now += 1.0
    assert call(ex).member.name == "b"
    assert "retry" in c.kinds()


def test_a_wait_past_the_deadline_gives_up_instead_of_sleeping() -> None:
    c = chain("a", policy=RetryPolicy(max_retries=2, retry_after_cap=10, total_timeout=2.0))
    ex = c.run()
    error = status(errors.RateLimitError, 429, retry_after=5.0)
    record(ex, call(ex), error)
    assert next_step(ex) == GiveUp(error)  # one backend: its own error


def test_a_retry_whose_wait_ran_past_the_deadline_is_not_called() -> None:
    c = chain("a", "b", policy=RetryPolicy(max_retries=1, initial_backoff=1.0, max_backoff=1.0,
                                           total_timeout=2.0))  # fmt: skip
    ex = c.run()
    record(ex, call(ex), errors.BackendConnectionError("refused"))
    record(ex, call(ex), errors.BackendConnectionError("refused"))
    step = next_step(ex)
    assert isinstance(step, Wait)
    c.clock.now += 2.0
    step = next_step(ex)
    assert isinstance(step, GiveUp) and isinstance(step.error, errors.AllBackendsFailedError)
    assert ex.route.attempts[-1].backend == "(deadline)"


def test_a_long_retry_after_fails_over_and_is_not_retried() -> None:
    c = chain("a", policy=RetryPolicy(retry_after_cap=10))
    ex = c.run()
    error = status(errors.RateLimitError, 429, retry_after=120.0)
    record(ex, call(ex), error)
    assert next_step(ex) == GiveUp(error)
    assert not decide(error, ex.policy).retryable and decide(error, ex.policy).fails_over


def test_per_backend_max_retries_and_the_retry_budget() -> None:
    c = chain("a", policy=RetryPolicy.testing(max_retries=5))
    c.members[0].backend.spec = BackendSpec("http", "http", "a", max_retries=1)
    ex = c.run()
    record(ex, call(ex), errors.BackendConnectionError("refused"))
    record(ex, call(ex), errors.BackendConnectionError("refused"))  # the one retry
    assert isinstance(next_step(ex), GiveUp)
    c.budget = RetryBudget(ratio=0.0, min_per_second=0.0, clock=c.clock)
    ex = c.run()
    record(ex, call(ex), errors.BackendConnectionError("refused"))
    assert isinstance(next_step(ex), GiveUp)
    assert any(e.detail == "retry budget exhausted" for e in c.events)


def test_an_open_breaker_is_skipped_and_the_soonest_one_probed() -> None:
    c = chain("a", "b", threshold=1)
    ex = c.run()
    record(ex, call(ex), errors.BackendConnectionError("refused"))
    record(ex, call(ex), errors.BackendConnectionError("refused"))
    assert [m.breaker.state for m in c.members] == ["open", "open"]
    c.clock.now += 1
    ex = c.run()
    t = call(ex)  # both open: a (whose cooldown ends first) is probed rather than failing
    assert t.member.name == "a"
    assert [a.skipped for a in ex.route.attempts] == [True, True]
    assert isinstance(ex.route.attempts[0].error, BreakerOpenError)
    record(ex, t)
    assert c.members[0].breaker.state == "closed"


def test_a_stale_attempt_does_not_close_a_breaker_that_opened_since() -> None:
    c = chain("a", "b", threshold=1)
    slow, fast = c.run(), c.run()
    t_slow = call(slow)
    record(fast, call(fast), errors.BackendConnectionError("refused"))  # a opens
    record(slow, t_slow)  # admitted before it opened: ignored
    assert c.members[0].breaker.state == "open"


def test_a_404_fails_over_without_hurting_health() -> None:
    c = chain("a", "b", threshold=1)
    ex = c.run()
    record(ex, call(ex), status(errors.NotFoundError, 404))
    assert c.members[0].breaker.state == "closed"
    assert call(ex).member.name == "b"


def test_context_length_moves_only_to_a_larger_context() -> None:
    c = chain("small", "same", "large", max_context={"small": 4096, "same": 4096, "large": 32768})
    ex = c.run()
    record(ex, call(ex), status(errors.ContextLengthError, 400))
    assert call(ex).member.name == "large"
    c = chain("small", "same", max_context={"small": 4096, "same": 4096})
    ex = c.run()
    error = status(errors.ContextLengthError, 400)
    assert record(ex, call(ex), error) == GiveUp(error)


def test_an_unsupported_capability_skips_the_backend_without_a_call() -> None:
    c = chain("a", "b")
    ex = c.run()
    error = errors.InvalidRequestError("n=2 is not supported", param="n")
    assert record(ex, call(ex), error) is None
    t = call(ex)
    assert (t.member.name, t.number, ex.calls) == ("b", 1, 1)  # nothing was sent to a
    assert ex.route.attempts[0].skipped
    assert record(ex, t, errors.InvalidRequestError("no")) is not None
    c = chain("a")
    ex = c.run()
    assert record(ex, call(ex), error) == GiveUp(error)  # nobody can: the error itself


def test_a_failure_after_content_is_recorded_and_ends_the_request() -> None:
    c = chain("a", "b")
    ex = c.run()
    t = call(ex)
    ex.route.backend = "a"
    error = errors.BackendTimeoutError("idle")
    assert record(ex, t, error, after_content=True) == GiveUp(error)
    assert ex.route.backend == "a" and ex.route.attempts[0].error is error
    assert "failover" not in c.kinds()


def test_hedges_spend_the_budget_and_losers_are_recorded_cancelled() -> None:
    c = chain("a", "b")
    ex = c.run()
    first = call(ex)
    assert hedge(ex, 0.5)
    second = call(ex)
    cancelled(ex, first)
    record(ex, second)
    assert "cancelled" in str(ex.route.attempts[0].error)
    assert ex.route.backend == "b"
    c.budget = RetryBudget(ratio=0.0, min_per_second=0.0, clock=c.clock)
    assert not hedge(c.run(), 0.5)


def test_an_abandoned_attempt_is_no_longer_in_flight() -> None:
    c = chain("a")
    ex = c.run()
    t = call(ex)
    assert c.members[0].balancer.outstanding == [1]
    abandoned(ex, t)
    assert c.members[0].balancer.outstanding == [0]
    assert c.members[0].breaker.state == "closed"


def test_the_request_timeout_overrides_the_policy() -> None:
    c = chain("a", policy=RetryPolicy.testing(total_timeout=60.0))
    ex = c.run(build_request([{"role": "user", "content": "hi"}], False, {"timeout": 2.0}))
    assert ex.deadline.remaining() == 2.0
    assert call(ex).deadline.remaining() == 2.0


# The table in docs/resilience.md, row by row: (error, fails over, retried, hurts health).
TABLE = [
    (errors.BackendConnectionError("refused"), True, True, True),
    (errors.BackendTimeoutError("ttft"), True, True, True),
    (status(errors.RateLimitError, 429, retry_after=1.0), True, True, True),
    (status(errors.RateLimitError, 429, retry_after=120.0), True, False, True),
    (status(errors.ServerError, 503), True, True, True),
    (status(errors.ServerError, 529), True, True, True),
    (status(errors.AuthenticationError, 401), True, False, True),
    (status(errors.NotFoundError, 404), True, False, False),
    (status(errors.StatusError, 408, retryable=True), True, True, False),
    (errors.ProtocolError("bad frame"), True, False, False),
    (status(errors.BadRequestError, 400), False, False, False),
    (status(errors.ServerError, 503, should_retry=False), True, False, True),
    (status(errors.AuthenticationError, 401, should_retry=True), True, True, True),
    (errors.InvalidRequestError("n=2"), True, False, False),
    (status(errors.ContextLengthError, 400), True, False, False),
]


def _row_id(value: object) -> str | None:
    return type(value).__name__ if isinstance(value, Exception) else None


@pytest.mark.parametrize(("error", "over", "retried", "health"), TABLE, ids=_row_id)
def test_the_documented_table(error: Exception, over: bool, retried: bool, health: bool) -> None:
    decision = decide(error, RetryPolicy())
    assert (decision.fails_over, decision.retryable, decision.hurts_health) == (
        over,
        retried,
        health,
    )

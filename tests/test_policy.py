"""The pure resilience decisions: failover, retry policy, breaker, budget, balancer, deadline."""

from __future__ import annotations

import pytest

from llmrouter import errors
from llmrouter.execution import fails_over
from llmrouter.policy import Balancer, CircuitBreaker, Deadline, RetryBudget, RetryPolicy


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def status(cls: type[errors.StatusError], code: int, **kw: object) -> errors.StatusError:
    return cls("x", backend="b", status_code=code, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (errors.BackendConnectionError("refused"), True),
        (errors.BackendTimeoutError("slow"), True),
        (status(errors.RateLimitError, 429), True),
        (status(errors.ServerError, 500), True),
        (status(errors.ServerError, 529), True),
        (status(errors.ServerError, 503, retryable=False, should_retry=False), True),
        (status(errors.AuthenticationError, 401), True),
        (status(errors.AuthenticationError, 403), True),
        (status(errors.NotFoundError, 404), True),
        (status(errors.BadRequestError, 400), False),
        (status(errors.ContextLengthError, 400), False),
        (errors.InvalidRequestError("bad"), False),
        (errors.ProtocolError("garbage"), True),
        (ValueError("not ours"), False),
    ],
)
def test_what_fails_over(error: BaseException, expected: bool) -> None:
    assert fails_over(error) is expected


def test_retry_policy_defaults_are_documented_values() -> None:
    policy = RetryPolicy()
    assert (policy.max_retries, policy.initial_backoff, policy.max_backoff) == (2, 0.5, 8.0)
    assert policy.total_timeout == 60.0 and policy.retry_after_cap == 10.0


def test_backoff_is_full_jitter_exponential() -> None:
    policy = RetryPolicy()
    for n, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (9, 8.0)]:
        samples = [policy.backoff(n) for _ in range(200)]
        assert all(0 <= s <= ceiling for s in samples)
        assert max(samples) > ceiling * 0.5  # spread over the range, not a constant
    assert RetryPolicy.testing().backoff(3) == 0.0


def test_retryable_errors_and_server_verdicts() -> None:
    policy = RetryPolicy()
    assert policy.is_retryable(errors.BackendConnectionError("x"))
    assert policy.is_retryable(status(errors.ServerError, 503))
    assert policy.is_retryable(status(errors.StatusError, 408, retryable=True))
    assert not policy.is_retryable(status(errors.AuthenticationError, 401))
    assert not policy.is_retryable(status(errors.ServerError, 503, should_retry=False))
    assert policy.is_retryable(status(errors.AuthenticationError, 401, should_retry=True))


def test_retry_after_is_honoured_up_to_the_cap() -> None:
    policy = RetryPolicy(retry_after_cap=10)
    assert policy.server_wait(status(errors.RateLimitError, 429, retry_after=3.0)) == 3.0
    long = status(errors.RateLimitError, 429, retry_after=30.0)
    assert policy.server_wait(long) is None and policy.asks_too_long(long)
    assert policy.server_wait(errors.BackendConnectionError("x")) is None
    assert policy.with_max_retries(5).max_retries == 5
    assert policy.with_max_retries(None) is policy


def test_breaker_opens_after_consecutive_failures_and_probes_once() -> None:
    clock = Clock()
    changes: list[tuple[str, str]] = []
    breaker = CircuitBreaker(
        failure_threshold=3, cooldown=30, clock=clock, on_change=lambda a, b: changes.append((a, b))
    )
    for _ in range(2):
        breaker.record_failure()
    assert breaker.state == "closed" and breaker.allow()
    breaker.record_failure()
    assert breaker.state == "open" and not breaker.allow()
    assert breaker.cooldown_remaining() == 30
    clock.now += 29.9
    assert not breaker.allow()
    clock.now += 0.1
    assert breaker.state == "half_open"
    assert breaker.allow() is True  # the single probe
    assert breaker.allow() is False  # everyone else waits for it
    breaker.record_failure()  # the probe failed: open again, full cooldown
    assert breaker.state == "open" and breaker.cooldown_remaining() == 30
    clock.now += 30
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed" and breaker.allow() and breaker.allow()
    assert changes == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]


def test_breaker_opens_on_failure_rate() -> None:
    breaker = CircuitBreaker(
        failure_threshold=100, failure_rate=0.5, window=10, min_calls=10, clock=Clock()
    )
    for i in range(9):
        (breaker.record_failure if i % 2 else breaker.record_success)()
    assert breaker.state == "closed"  # 4 of 9, and fewer than min_calls
    breaker.record_failure()  # 5 of 10
    assert breaker.state == "open"


def test_force_probe_lets_one_call_through_an_open_breaker() -> None:
    breaker = CircuitBreaker(failure_threshold=1, clock=Clock())
    breaker.record_failure()
    breaker.force_probe()
    assert breaker.state == "half_open" and not breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed"


def test_retry_budget_is_a_fraction_of_recent_requests_plus_a_floor() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.2, min_per_second=0.5, ttl=10, clock=clock)
    # Floor: 0.5/s over 10 s = 5 retries with no traffic at all.
    assert sum(budget.try_spend() for _ in range(10)) == 5
    for _ in range(100):
        budget.record_request()
    assert sum(budget.try_spend() for _ in range(50)) == 20  # 20 % of 100
    clock.now += 10.1  # the window moves on: spent and deposited both expire
    assert budget.stats() == {"requests": 0, "retries": 0, "available": 5.0}


def test_balancer_least_outstanding_with_weights() -> None:
    balancer = Balancer([1, 1, 2])
    assert balancer.order() == [0, 1, 2]
    balancer.started(0)
    assert balancer.order()[0] == 1
    balancer.started(1)
    assert balancer.order()[0] == 2
    balancer.started(2)
    assert balancer.order()[0] == 2  # weight 2: one in flight counts as a half
    balancer.finished(0, 0.1)
    assert balancer.order()[0] == 0


def test_balancer_round_robin_and_latency() -> None:
    rr = Balancer([1, 1, 1], "round_robin")
    assert [rr.order()[0] for _ in range(6)] == [0, 1, 2, 0, 1, 2]
    assert rr.order() == [0, 1, 2]
    weighted = Balancer([2, 1], "round_robin")
    assert [weighted.order()[0] for _ in range(6)] == [0, 0, 1, 0, 0, 1]
    lat = Balancer([1, 1, 1], "latency")
    for i, seconds in enumerate([0.3, 0.1, 0.2]):
        lat.started(i)
        lat.finished(i, seconds)
    assert lat.order() == [1, 2, 0]
    with pytest.raises(ValueError, match="unknown balancing"):
        Balancer([1], "random")  # type: ignore[arg-type]


def test_deadline() -> None:
    clock = Clock()
    deadline = Deadline(10, clock)
    assert deadline.remaining() == 10 and deadline.cap(3) == 3 and deadline.cap(None) == 10
    clock.now += 8
    assert deadline.cap(5) == 2 and deadline.child(5).remaining() == 2
    clock.now += 3
    assert deadline.expired() and deadline.remaining() == 0
    assert Deadline(None, clock).cap(4) == 4 and not Deadline(None, clock).expired()


def test_outcomes_of_calls_admitted_before_opening_are_ignored() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=2, cooldown=30, clock=clock)
    slow = breaker.generation  # a slow call is admitted while the breaker is closed
    breaker.record_failure(breaker.generation)
    breaker.record_failure(breaker.generation)
    assert breaker.state == "open"
    breaker.record_success(slow)  # the slow call finishes fine: the breaker stays open
    assert breaker.state == "open" and breaker.cooldown_remaining() == 30
    breaker.record_failure(slow)  # nor does a straggler's failure restart the cooldown
    clock.now += 30
    assert breaker.allow()
    probe = breaker.generation
    breaker.record_success(probe)  # only the probe decides
    assert breaker.state == "closed"

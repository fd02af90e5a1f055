"""GenerationWatch: the deadlines an in-process engine reads between tokens (pure, a fake clock)."""

from __future__ import annotations

import pytest

from llmrouter import BackendTimeoutError
from llmrouter._concurrency import GenerationWatch
from llmrouter.policy import Deadline


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _watch(
    clock: Clock, total: float | None, ttft: float | None = None, read: float | None = None
) -> GenerationWatch:
    return GenerationWatch(Deadline(total, clock), ttft=ttft, read=read, backend="engine")


def test_no_limits_never_time_out() -> None:
    clock = Clock()
    watch = _watch(clock, None)
    assert watch.remaining() is None
    clock.now += 1e6
    watch.token()
    watch.waiting()
    watch.check()
    assert watch.tokens == 1


def test_the_total_deadline_bounds_every_token() -> None:
    clock = Clock()
    watch = _watch(clock, 1.0)
    clock.now += 0.6
    watch.token(3)
    assert watch.remaining() == pytest.approx(0.4)
    clock.now += 0.4
    with pytest.raises(BackendTimeoutError, match="total deadline passed after 3 tokens") as info:
        watch.token()
    assert info.value.backend == "engine"
    assert watch.tokens == 3  # the late token is not counted


def test_the_first_token_has_the_ttft_limit_from_the_start() -> None:
    clock = Clock()
    watch = _watch(clock, 10.0, ttft=0.5, read=5.0)
    assert watch.remaining() == pytest.approx(0.5)
    watch.waiting()  # before the first token: the ttft clock keeps running
    watch.token(0)  # an output without a token is no first token either
    clock.now += 0.5
    with pytest.raises(BackendTimeoutError, match="no first token within the ttft_timeout"):
        watch.check()


def test_later_tokens_have_the_read_limit_from_when_they_are_asked_for() -> None:
    clock = Clock()
    watch = _watch(clock, 10.0, ttft=0.5, read=0.2)
    clock.now += 0.4
    watch.token()
    assert watch.remaining() == pytest.approx(0.2)
    clock.now += 3.0  # the consumer took its time: not the engine's
    watch.waiting()
    clock.now += 0.1
    watch.token()
    clock.now += 0.2
    with pytest.raises(BackendTimeoutError, match=r"read_timeout of 0\.2 s after 2 tokens"):
        watch.token()


def test_each_limit_is_capped_by_the_total_deadline() -> None:
    clock = Clock()
    watch = _watch(clock, 0.3, ttft=5.0, read=5.0)
    assert watch.remaining() == pytest.approx(0.3)
    clock.now += 0.1
    watch.token()
    assert watch.remaining() == pytest.approx(0.2)
    clock.now += 0.2
    with pytest.raises(BackendTimeoutError, match="total deadline"):
        watch.check()


def test_the_error_says_what_the_engine_was_doing() -> None:
    error = _watch(Clock(), 1.0, ttft=0.5).timeout(" (the engine was busy)")
    assert str(error).endswith(
        "no first token within the ttft_timeout of 0.5 s (the engine was busy)"
    )

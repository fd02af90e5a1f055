"""Failover, retries, deadlines, breakers and balancing, with faults injected over real sockets.

A fault proxy sits in front of the real llama.cpp server; each backend of a chain is a proxy
with its own script, so every test can count the calls each backend received.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from email.utils import formatdate
from urllib.parse import urlsplit

import pytest

from llmrouter import (
    AllBackendsFailedError,
    AsyncClient,
    AuthenticationError,
    BackendConnectionError,
    BackendTimeoutError,
    BadRequestError,
    ContextLengthError,
    ProtocolError,
    RateLimitError,
    ServerError,
    StreamInterruptedError,
)
from llmrouter._concurrency import asleep
from llmrouter.events import Event
from llmrouter.policy import CircuitBreaker, RetryBudget, RetryPolicy
from tests.conftest import PARIS
from tests.fakes.fault_proxy import Fault, FaultProxy

pytestmark = pytest.mark.llama_server

FAST = RetryPolicy.testing()
NO_RETRY = RetryPolicy.testing(max_retries=0)
SHORT = [{"role": "user", "content": "Say hi."}]


def U(proxy: FaultProxy, **query: object) -> str:
    """The proxy's backend URL, with the model pinned (no /v1/models discovery call)."""
    params = "&".join(f"{k}={v}" for k, v in {"model": "smollm2", **query}.items())
    return f"{proxy.url}?{params}"


def respond(status: int, error: dict[str, object] | str, **headers: str) -> Fault:
    body = json.dumps({"error": error}).encode() if isinstance(error, dict) else error.encode()
    return Fault("respond", status=status, body=body, headers=headers)


@pytest.fixture
def proxies(llama_server: str) -> Iterator[list[FaultProxy]]:
    port = urlsplit(llama_server).port
    assert port is not None
    started = [FaultProxy(port) for _ in range(3)]
    for proxy in started:
        proxy.__enter__()
    yield started
    for proxy in started:
        proxy.__exit__(None, None, None)


async def test_fails_over_along_the_chain(proxies: list[FaultProxy]) -> None:
    a, b, c = proxies
    a.script(respond(503, {"message": "overloaded"}))
    b.script("reset")
    async with AsyncClient(f"{U(a)}, {U(b)}, {U(c)}", retry_policy=FAST) as client:
        resp = await client.chat.completions.create(messages=PARIS, max_tokens=32, temperature=0)
    assert "Paris" in resp.choices[0].message.content
    assert resp.route.backend == U(c)
    assert [type(x.error) for x in resp.route.attempts] == [
        ServerError,
        BackendConnectionError,
        type(None),
    ]
    assert (a.connections, b.connections, c.connections) == (1, 1, 1)


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (respond(429, {"message": "slow down"}), RateLimitError),
        (respond(500, {"message": "boom"}), ServerError),
        (respond(502, "<html><body>Bad gateway</body></html>"), ServerError),
        (respond(504, "gateway timeout"), ServerError),
        (respond(529, {"type": "overloaded_error", "message": "Overloaded"}), ServerError),
        (respond(401, {"message": "bad key"}), AuthenticationError),
        (respond(403, {"message": "forbidden"}), AuthenticationError),
        (respond(404, {"message": "The model `x` does not exist."}), Exception),
        (
            Fault(
                "raw",
                body=b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b'Content-Length: 20\r\nConnection: close\r\n\r\n{"id": "x", "trunc',
            ),
            Exception,
        ),
    ],
)
async def test_each_failure_kind_fails_over(
    proxies: list[FaultProxy], fault: Fault, error: type[BaseException]
) -> None:
    a, b, _ = proxies
    a.script(fault)
    async with AsyncClient(f"{U(a)}, {U(b)}", retry_policy=FAST) as client:
        resp = await client.chat.completions.create(messages=SHORT, max_tokens=4)
    assert resp.route.backend == U(b)
    assert isinstance(resp.route.attempts[0].error, error)
    assert a.connections == 1 and b.connections == 1


async def test_a_bad_request_does_not_fail_over(proxies: list[FaultProxy]) -> None:
    a, b, _ = proxies
    a.script(respond(400, {"message": "messages: bad", "type": "invalid_request_error"}))
    async with AsyncClient(f"{U(a)}, {U(b)}", retry_policy=FAST) as client:
        with pytest.raises(BadRequestError):
            await client.chat.completions.create(messages=SHORT, max_tokens=4)
    assert (a.connections, b.connections) == (1, 0)


async def test_context_length_fails_over_only_to_a_larger_context(
    proxies: list[FaultProxy],
) -> None:
    a, b, c = proxies
    too_long = respond(
        400,
        {
            "message": "This model's maximum context length is 2048 tokens",
            "code": "context_length_exceeded",
        },
    )
    a.script(too_long)
    chain = f"{U(a, max_context=2048)}, {U(b, max_context=1024)}, {U(c, max_context=8192)}"
    async with AsyncClient(chain, retry_policy=FAST) as client:
        resp = await client.chat.completions.create(messages=SHORT, max_tokens=4)
        assert resp.route.backend.startswith(U(c))
        assert (a.connections, b.connections, c.connections) == (1, 0, 1)
        a.script(too_long)
    async with AsyncClient(f"{U(a)}, {U(b)}", retry_policy=FAST) as client:
        with pytest.raises(ContextLengthError):
            await client.chat.completions.create(messages=SHORT, max_tokens=4)
    assert b.connections == 0


async def test_everything_failing_reports_every_attempt(proxies: list[FaultProxy]) -> None:
    a, b, _ = proxies
    a.script(*[respond(503, {"message": "down"})] * 3)
    b.script(*[respond(500, {"message": "broken"})] * 3)
    async with AsyncClient(f"{U(a)}, {U(b)}", retry_policy=FAST) as client:
        with pytest.raises(AllBackendsFailedError) as info:
            await client.chat.completions.create(messages=SHORT)
    report = str(info.value)
    assert report.startswith("all 6 attempt(s) failed:")
    assert report.count(U(a)) == 3 and report.count(U(b)) == 3
    assert all(att.duration_s >= 0 for att in info.value.attempts)
    # Failover first: a, b, then retries of each (two retries per backend).
    assert [att.backend for att in info.value.attempts[:2]] == [U(a), U(b)]


async def test_single_backend_retries_then_raises_its_own_error(proxies: list[FaultProxy]) -> None:
    a, _, _ = proxies
    a.script("reset", "reset", "reset")
    async with AsyncClient(U(a), retry_policy=FAST) as client:
        with pytest.raises(BackendConnectionError):
            await client.chat.completions.create(messages=SHORT)
    assert a.connections == 3  # one call and max_retries=2 retries
    a.script("reset", "reset")
    async with AsyncClient(U(a), retry_policy=FAST) as client:
        resp = await client.chat.completions.create(messages=SHORT, max_tokens=4)
    assert len(resp.route.attempts) == 3 and resp.route.attempts[-1].error is None


@pytest.mark.parametrize(
    "headers",
    [{"retry-after-ms": "300"}, {"Retry-After": "0.3"}, {"Retry-After": "1"}],
    ids=["retry-after-ms", "seconds", "http-date"],
)
async def test_short_retry_after_is_honoured(
    proxies: list[FaultProxy], headers: dict[str, str]
) -> None:
    a, _, _ = proxies
    if headers.get("Retry-After") == "1":
        headers = {"Retry-After": formatdate(time.time() + 2, usegmt=True)}
    a.script(respond(429, {"message": "slow down"}, **headers))
    policy = RetryPolicy(retry_after_cap=10)
    async with AsyncClient(U(a), retry_policy=policy) as client:
        started = time.monotonic()
        resp = await client.chat.completions.create(messages=SHORT, max_tokens=4)
        elapsed = time.monotonic() - started
    assert a.connections == 2 and resp.route.backend == U(a)
    assert elapsed >= 0.25  # waited as asked (the HTTP date has one-second resolution)


async def test_long_retry_after_fails_over_instead_of_sleeping(proxies: list[FaultProxy]) -> None:
    a, b, _ = proxies
    a.script(respond(429, {"message": "slow down"}, **{"Retry-After": "120"}))
    async with AsyncClient(f"{U(a)}, {U(b)}") as client:  # the default policy
        started = time.monotonic()
        resp = await client.chat.completions.create(messages=SHORT, max_tokens=4)
    assert time.monotonic() - started < 5
    assert resp.route.backend == U(b) and a.connections == 1
    a.script(respond(429, {"message": "slow down"}, **{"Retry-After": "120"}))
    async with AsyncClient(U(a)) as client:
        with pytest.raises(RateLimitError) as info:
            await client.chat.completions.create(messages=SHORT, max_tokens=4)
    assert info.value.retry_after == 120 and a.connections == 2


async def test_x_should_retry_false_forbids_a_retry(proxies: list[FaultProxy]) -> None:
    a, _, _ = proxies
    a.script(respond(503, {"message": "no"}, **{"x-should-retry": "false"}))
    async with AsyncClient(U(a), retry_policy=FAST) as client:
        with pytest.raises(ServerError):
            await client.chat.completions.create(messages=SHORT)
    assert a.connections == 1


async def test_per_backend_max_retries(proxies: list[FaultProxy]) -> None:
    a, _, _ = proxies
    a.script(*["reset"] * 6)
    async with AsyncClient(f"{U(a, max_retries=4)}", retry_policy=FAST) as client:
        with pytest.raises(BackendConnectionError):
            await client.chat.completions.create(messages=SHORT)
    assert a.connections == 5


async def test_ttft_deadline_abandons_a_silent_backend(proxies: list[FaultProxy]) -> None:
    a, b, _ = proxies
    a.script("blackhole", "blackhole")
    async with AsyncClient(f"{U(a, ttft_timeout=0.5)}, {U(b)}", retry_policy=NO_RETRY) as client:
        started = time.monotonic()
        resp = await client.chat.completions.create(messages=SHORT, max_tokens=4)
        assert time.monotonic() - started < 5
        assert isinstance(resp.route.attempts[0].error, BackendTimeoutError)
        stream = await client.chat.completions.create(messages=SHORT, max_tokens=4, stream=True)
        async with stream:
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text and stream.route.backend == U(b)
    assert isinstance(stream.route.attempts[0].error, BackendTimeoutError)


async def test_total_deadline_bounds_the_whole_request(proxies: list[FaultProxy]) -> None:
    a, b, _ = proxies
    a.script("blackhole")
    b.script("blackhole")
    async with AsyncClient(f"{U(a)}, {U(b)}", retry_policy=FAST, timeout=1.0) as client:
        started = time.monotonic()
        with pytest.raises((AllBackendsFailedError, BackendTimeoutError)):
            await client.chat.completions.create(messages=SHORT)
    assert time.monotonic() - started < 4


async def test_stream_fails_over_before_content(proxies: list[FaultProxy]) -> None:
    a, b, c = proxies
    a.script(Fault("reset_after", after=10))  # cut inside the response headers
    b.script(
        Fault(
            "raw",
            body=b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Connection: close\r\n\r\ndata: {not json}\n\n",
        )
    )
    async with AsyncClient(f"{U(a)}, {U(b)}, {U(c)}", retry_policy=NO_RETRY) as client:
        stream = await client.chat.completions.create(
            messages=PARIS, max_tokens=32, temperature=0, stream=True
        )
        async with stream:
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert "Paris" in text
    assert stream.route.backend == U(c)
    assert isinstance(stream.route.attempts[0].error, BackendConnectionError)
    assert isinstance(stream.route.attempts[1].error, ProtocolError)


@pytest.mark.parametrize(
    "fault",
    [
        Fault("reset_after", after=3000),
        Fault("close_after", after=3000),
        Fault("stall_after", after=3000),
    ],
    ids=["reset", "clean-close", "stall"],
)
async def test_stream_cut_after_content_raises_with_the_partial_text(
    proxies: list[FaultProxy], fault: Fault
) -> None:
    a, b, _ = proxies
    a.script(fault)
    received = ""
    url = f"{U(a, read_timeout=4)}, {U(b)}"  # sync: also bounds the first chunk
    async with AsyncClient(url, retry_policy=FAST) as client:
        stream = await client.chat.completions.create(
            messages=[{"role": "user", "content": "Count from 1 to 50."}],
            max_tokens=200,
            temperature=0,
            stream=True,
        )
        with pytest.raises(StreamInterruptedError) as info:
            async with stream:
                async for chunk in stream:
                    received += (chunk.choices[0].delta.content or "") if chunk.choices else ""
    assert received and info.value.partial_text == received
    assert info.value.backend.startswith(U(a))
    assert b.connections == 0  # never resent after content reached the caller


async def test_a_cut_after_the_finish_chunk_is_a_normal_end(proxies: list[FaultProxy]) -> None:
    a, b, _ = proxies
    a.script(Fault("drop_done"))  # everything but "data: [DONE]", then a clean close
    async with AsyncClient(f"{U(a)}, {U(b)}", retry_policy=FAST) as client:
        stream = await client.chat.completions.create(
            messages=PARIS, max_tokens=32, temperature=0, stream=True
        )
        async with stream:
            chunks = [chunk async for chunk in stream]
    assert "Paris" in stream.text
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert stream.route.backend == U(a) and b.connections == 0


async def test_open_breaker_is_skipped_without_a_call(proxies: list[FaultProxy]) -> None:
    a, b, _ = proxies
    a.script(*["reset"] * 2)
    events: list[Event] = []
    async with AsyncClient(
        f"{U(a)}, {U(b)}",
        retry_policy=NO_RETRY,
        circuit_breaker=lambda: CircuitBreaker(failure_threshold=2, cooldown=60),
        on_event=events.append,
    ) as client:
        for _ in range(2):
            await client.chat.completions.create(messages=SHORT, max_tokens=2)
        resp = await client.chat.completions.create(messages=SHORT, max_tokens=2)
    assert a.connections == 2  # the third request did not touch a
    assert resp.route.attempts[0].skipped and resp.route.attempts[0].backend == U(a)
    assert resp.route.backend == U(b)
    assert any(e.kind == "breaker" and e.detail == "closed->open" for e in events)
    assert any(e.kind == "skip" and e.backend == U(a) for e in events)


async def test_when_every_breaker_is_open_the_soonest_is_probed(proxies: list[FaultProxy]) -> None:
    a, b, _ = proxies
    a.script("reset")
    b.script("reset")
    async with AsyncClient(
        f"{U(a)}, {U(b)}",
        retry_policy=NO_RETRY,
        circuit_breaker=lambda: CircuitBreaker(failure_threshold=1, cooldown=60),
    ) as client:
        with pytest.raises(AllBackendsFailedError):
            await client.chat.completions.create(messages=SHORT, max_tokens=2)
        resp = await client.chat.completions.create(messages=SHORT, max_tokens=2)
    # a opened first, so its cooldown ends first: it gets the probe, succeeds, and closes.
    assert resp.route.backend == U(a)
    assert (a.connections, b.connections) == (2, 1)


async def test_a_failed_probe_moves_on_to_the_next_open_backend_within_budget(
    proxies: list[FaultProxy],
) -> None:
    a, b, _ = proxies
    a.script("reset", "reset")
    b.script("reset")
    breakers = lambda: CircuitBreaker(failure_threshold=1, cooldown=60)  # noqa: E731
    async with AsyncClient(
        f"{U(a)}, {U(b)}", retry_policy=NO_RETRY, circuit_breaker=breakers
    ) as client:
        with pytest.raises(AllBackendsFailedError):
            await client.chat.completions.create(messages=SHORT, max_tokens=2)  # both open
        resp = await client.chat.completions.create(messages=SHORT, max_tokens=2)
    # a (soonest cooldown) is probed and fails again; b is probed next and serves.
    assert resp.route.backend == U(b)
    assert (a.connections, b.connections) == (2, 2)
    assert [x.skipped for x in resp.route.attempts] == [True, True, False, False]


async def test_half_open_breaker_lets_one_probe_through(proxies: list[FaultProxy]) -> None:
    a, b, _ = proxies
    clock = [0.0]
    a.script("reset")
    async with AsyncClient(
        f"{U(a)}, {U(b)}",
        retry_policy=NO_RETRY,
        circuit_breaker=lambda: CircuitBreaker(
            failure_threshold=1, cooldown=5, clock=lambda: clock[0]
        ),
    ) as client:
        await client.chat.completions.create(messages=SHORT, max_tokens=2)  # a fails, b serves
        await client.chat.completions.create(messages=SHORT, max_tokens=2)  # a skipped
        assert a.connections == 1
        clock[0] = 5.0  # cooldown over: a is half-open, one probe goes through and succeeds
        resp = await client.chat.completions.create(messages=SHORT, max_tokens=2)
    assert resp.route.backend == U(a) and a.connections == 2


async def test_load_balanced_group_then_failover(
    proxies: list[FaultProxy], closed_url: str
) -> None:
    a, b, c = proxies
    chain = f"{U(a)} | {U(b)}, {U(c)}"
    async with AsyncClient(chain, retry_policy=FAST, balancing="round_robin") as client:
        for _ in range(4):
            await client.chat.completions.create(messages=SHORT, max_tokens=2)
        assert (a.connections, b.connections, c.connections) == (2, 2, 0)
        a.script("reset")
        b.script("reset")
        resp = await client.chat.completions.create(messages=SHORT, max_tokens=2)
    assert resp.route.backend == U(c)  # the whole group was down


async def test_retry_budget_caps_retries(proxies: list[FaultProxy]) -> None:
    a, _, _ = proxies
    a.script(*["reset"] * 10)
    budget = RetryBudget(ratio=0.0, min_per_second=0.1, ttl=10)  # one retry in all
    async with AsyncClient(U(a), retry_policy=FAST, retry_budget=budget) as client:
        for _ in range(2):
            with pytest.raises(BackendConnectionError):
                await client.chat.completions.create(messages=SHORT)
    assert a.connections == 3  # 2 requests + the one retry the budget allowed


async def test_events_tell_the_story(proxies: list[FaultProxy]) -> None:
    a, b, _ = proxies
    a.script("reset")
    events: list[Event] = []
    async with AsyncClient(f"{U(a)}, {U(b)}", retry_policy=FAST, on_event=events.append) as client:
        await client.chat.completions.create(messages=SHORT, max_tokens=2)
    kinds = [(e.kind, e.backend) for e in events]
    assert kinds == [
        ("attempt_start", U(a)),
        ("failure", U(a)),
        ("failover", U(a)),
        ("attempt_start", U(b)),
        ("success", U(b)),
    ]
    assert all(e.elapsed_s >= 0 for e in events)


async def test_health_probing_opens_and_closes_the_breaker(proxies: list[FaultProxy]) -> None:
    a, b, _ = proxies
    async with AsyncClient(f"{U(a, health='30s')}, {U(b)}", retry_policy=NO_RETRY) as client:
        router = client._router
        member = router.members[0]
        a.script(respond(503, {"message": "loading"}))
        assert await router.probe(member) is False
        assert member.breaker.state == "open"
        resp = await client.chat.completions.create(messages=SHORT, max_tokens=2)
        assert resp.route.attempts[0].skipped and resp.route.backend == U(b)
        assert await router.probe(member) is True  # GET /v1/models answers again
        assert member.breaker.state == "closed"
        resp = await client.chat.completions.create(messages=SHORT, max_tokens=2)
        assert resp.route.backend == U(a, health="30s")
    assert a.served.count("pass") >= 2


async def test_health_probe_routes(llama_server: str) -> None:
    from llmrouter.backends.openai_compat import build_health
    from llmrouter.config import parse_backend

    assert build_health(parse_backend("vllm://h:8000", {})).url == "http://h:8000/health"
    assert build_health(parse_backend("tgi+https://h", {})).url == "https://h:8080/health"
    assert build_health(parse_backend("llamacpp://h", {})).url == "http://h:8080/v1/models"
    async with AsyncClient(f"{llama_server}?health=1s") as client:
        assert await client._router.probe(client._router.members[0]) is True


async def test_background_prober_tracks_a_backend_without_traffic(
    proxies: list[FaultProxy],
) -> None:
    a, _, _ = proxies
    async with AsyncClient(U(a, health="0.2s"), retry_policy=NO_RETRY) as client:
        await client.chat.completions.create(messages=SHORT, max_tokens=2)  # starts the prober
        member = client._router.members[0]
        a.script(*[respond(503, {"message": "down"})] * 2)
        deadline = time.monotonic() + 5
        while member.breaker.state != "open" and time.monotonic() < deadline:
            await asleep(0.05)
        assert member.breaker.state == "open"
        while member.breaker.state != "closed" and time.monotonic() < deadline:
            await asleep(0.05)
        assert member.breaker.state == "closed"  # the probes answer again

"""Shared breaker, probe, budget and rate-limit state in a real Redis (``LLMROUTER_STATE``).

A session fixture starts ``redis-server`` on a free loopback port; each test uses its own
namespace. Client processes are spawned with ``multiprocessing`` and driven over pipes
(``tests/state_worker.py``); backends are the loopback OpenAI fake, which counts the calls.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from multiprocessing.connection import Connection
from types import SimpleNamespace
from typing import Any, cast

import httpx2
import pytest

from llmrouter import AsyncClient, Client
from llmrouter.errors import ConfigError
from llmrouter.policy import Balancer, CircuitBreaker, RetryBudget, RetryPolicy
from llmrouter.server.ratelimit import SharedRateLimiter
from llmrouter.state import MemoryState, aopen_state, key_id, open_state, parse_state_url
from llmrouter.state.redis_state import AsyncRedisState, RedisState
from llmrouter.state.shared import FLUSH_INTERVAL, STALE_AFTER, SharedBalancer
from tests.conftest import RedisServer, free_port
from tests.fakes.fault_proxy import Fault, FaultProxy
from tests.fakes.openai_fake import Error, OpenAIFake
from tests.state_worker import worker

HI = [{"role": "user", "content": "hi"}]
FAIL = Error(503, {"error": {"message": "overloaded"}})


def ns_url(server: RedisServer) -> str:
    return f"{server.url}?namespace=t{uuid.uuid4().hex[:8]}"


def raw(server: RedisServer) -> Any:
    import redis

    return redis.Redis(port=server.port, decode_responses=True)


def wait_until(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


@pytest.fixture
def fakes() -> Iterator[tuple[OpenAIFake, OpenAIFake]]:
    with OpenAIFake(models=["m"]) as a, OpenAIFake(models=["m"]) as b:
        yield a, b


class Workers:
    def __init__(
        self,
        n: int,
        urls: str,
        state_url: str,
        cooldown: float,
        balancing: str = "least_outstanding",
    ) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conns: list[Connection] = []
        self.procs = []
        for _ in range(n):
            parent, child = ctx.Pipe()
            args = (child, urls, state_url, cooldown, balancing)
            proc = ctx.Process(target=worker, args=args)
            proc.start()
            self.conns.append(parent)
            self.procs.append(proc)
        for conn in self.conns:
            assert conn.poll(30) and conn.recv() == "ready"

    def ask(self, i: int, *command: Any) -> Any:
        self.conns[i].send(command)
        assert self.conns[i].poll(30)
        return self.conns[i].recv()

    def all(self, *command: Any) -> list[Any]:
        for conn in self.conns:
            conn.send(command)
        return [conn.recv() for conn in self.conns if conn.poll(30)]

    def close(self) -> None:
        for conn in self.conns:
            conn.send(("exit",))
        for proc in self.procs:
            proc.join(10)


# -- configuration ----------------------------------------------------------------------------


def test_state_urls_and_the_default_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_state_url("redis://h:6379/0") == ("redis://h:6379/0", "default")
    assert parse_state_url("redis://:pw@h/1?namespace=prod") == ("redis://:pw@h/1", "prod")
    with pytest.raises(ConfigError, match="expected memory:// or redis://"):
        parse_state_url("http://h")
    with pytest.raises(ConfigError, match="namespace"):
        parse_state_url("redis://h?namespace=a:b")
    monkeypatch.delenv("LLMROUTER_STATE", raising=False)
    assert open_state(None) is None and aopen_state("memory://") is None
    assert open_state(MemoryState()) is None
    client = Client("http://127.0.0.1:9/v1?model=m")
    assert client._router._state is None  # the default adds nothing to the router
    assert type(client._router.members[0].breaker) is CircuitBreaker
    client.close()
    client = Client("http://127.0.0.1:9/v1?model=m | http://127.0.0.1:8/v1?model=m")
    assert type(client._router.members[0].balancer) is Balancer  # not wrapped
    client.close()


def test_env_selects_redis_and_the_url_password_never_shows(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMROUTER_STATE", f"redis://:hunter2@127.0.0.1:{redis_server.port}/0")
    client = Client("http://127.0.0.1:9/v1?model=m")
    store = client._router._state
    assert isinstance(store, RedisState)
    assert "hunter2" not in repr(store) and "hunter2" not in store.display
    client.close()


# -- breakers across processes ------------------------------------------------------------------


def test_a_breaker_opened_in_one_process_is_seen_by_the_others(
    redis_server: RedisServer, fakes: tuple[OpenAIFake, OpenAIFake]
) -> None:
    a, b = fakes
    state = ns_url(redis_server)
    pool = Workers(3, f"{a.url}?model=m, {b.url}?model=m", state, cooldown=30.0)
    try:
        assert pool.all("request", 1) == [[f"{a.url}?model=m"]] * 3
        a.script(FAIL)
        assert pool.ask(0, "request", 1) == [f"{b.url}?model=m"]  # fails on a, opens
        assert all(t is not None for t in pool.all("wait", "open", 5.0))
        before = len(a.chat_requests)
        assert pool.all("request", 3) == [[f"{b.url}?model=m"] * 3] * 3
        assert len(a.chat_requests) == before  # nobody called the open backend
    finally:
        pool.close()
    # The key names a digest, never the backend, and expires.
    r = raw(redis_server)
    keys = r.keys(f"llmrouter:{parse_state_url(state)[1]}:*")
    assert keys and not any("127.0.0.1" in k for k in keys)
    assert all(r.pttl(k) > 0 for k in keys)


def test_half_open_lets_one_probe_through_cluster_wide(
    redis_server: RedisServer, fakes: tuple[OpenAIFake, OpenAIFake]
) -> None:
    a, b = fakes
    pool = Workers(3, f"{a.url}?model=m, {b.url}?model=m", ns_url(redis_server), cooldown=0.5)
    try:
        a.script(FAIL)
        pool.ask(0, "request", 1)
        assert all(t is not None for t in pool.all("wait", "open", 5.0))
        assert all(t is not None for t in pool.all("wait", "half_open", 5.0))
        before = len(a.chat_requests)
        a.script(FAIL)  # the probe fails: the breaker re-opens everywhere
        results = pool.all("request", 4)
        assert len(a.chat_requests) - before == 1  # one probe, not one per process
        assert sum(r.count(f"{b.url}?model=m") for r in results) == 12  # none failed
    finally:
        pool.close()


def test_a_successful_probe_closes_the_breaker_everywhere(redis_server: RedisServer) -> None:
    state = ns_url(redis_server)
    stores = [RedisState(state) for _ in range(2)]
    breakers = [s.breaker("a", CircuitBreaker(failure_threshold=1, cooldown=0.2)) for s in stores]
    for store in stores:
        store.start()
    assert wait_until(lambda: all(s.subscribed for s in stores))
    breakers[0].record_failure(breakers[0].generation)
    assert wait_until(lambda: breakers[1].state == "open")
    assert wait_until(lambda: breakers[1].state == "half_open")
    assert breakers[1].allow() is True  # wins the cluster's probe
    assert breakers[0].allow() is False and breakers[0].force_probe() is False
    breakers[1].record_success(breakers[1].generation)
    assert wait_until(lambda: breakers[0].state == "closed")
    for store in stores:
        store.close()


def test_the_retry_budget_and_health_lock_are_shared(redis_server: RedisServer) -> None:
    state = ns_url(redis_server)
    one, two = RedisState(state), RedisState(state)
    budgets = [s.budget(RetryBudget(ratio=0.5, min_per_second=0.1, ttl=10)) for s in (one, two)]
    for _ in range(4):
        budgets[0].record_request()  # flushes the first; the rest go with the next flush
    budgets[0].flush()
    budgets[1].flush()
    assert budgets[1].available() == pytest.approx(0.5 * 4 + 1.0)  # the other's requests
    assert budgets[1].try_spend() and budgets[1].try_spend() and budgets[1].try_spend()
    budgets[1].flush()
    budgets[0].flush()
    assert budgets[0].available() == pytest.approx(0.0)  # the other's retries
    assert budgets[0].try_spend() is False
    assert one.try_lock("health:x", 5.0) is True and two.try_lock("health:x", 5.0) is False
    one.close()
    two.close()


# -- balancers across processes ----------------------------------------------------------------


def test_a_shared_balancer_blends_the_cluster_view_while_it_is_fresh() -> None:
    now = [100.0]
    plane = SimpleNamespace(active=True)
    local = Balancer([1.0, 1.0], "latency")
    shared = SharedBalancer(local, ["x", "y"], "me.0", cast(Any, plane), clock=lambda: now[0])
    for i, seconds in ((0, 0.05), (1, 0.1)):
        shared.started(i)
        shared.finished(i, seconds)
    assert shared.order() == [0, 1] and shared.cluster() is None  # x is faster here
    assert shared.snapshot() == ["0.050000 0", "0.100000 0"]
    # Two other processes saw x slow, one saw y fast; a malformed entry is skipped.
    shared.absorb([[b"1 0.500000 0", "1 0.300000 2", b"junk"], [b"1 0.200000 1", b"1 - 3"]])
    assert shared.cluster() == ([pytest.approx(0.4), 0.2], [2.0, 4.0])
    # One vote per process: x = (0.05 + 0.5 + 0.3) / 3 = 0.283, y = (0.1 + 0.2) / 2 = 0.15.
    assert shared.order() == [1, 0]
    now[0] += STALE_AFTER - 0.1
    assert shared.order() == [1, 0]
    now[0] += 0.2  # the view is too old: this process's own estimates decide
    assert shared.order() == [0, 1]
    shared.absorb([[b"1 0.5 0"], [b"1 0.2 0"]])
    assert shared.order() == [1, 0]
    plane.active = False  # the store is down: local values only
    assert shared.order() == [0, 1]
    plane.active = True
    shared.absorb([[b"1 0.5 0"]])  # not one row per replica: ignored
    assert shared.order() == [1, 0]

    # least_outstanding: the others' requests in flight add to this process's, per weight.
    busy = Balancer([1.0, 2.0])
    shared = SharedBalancer(busy, ["x", "y"], "me.1", cast(Any, plane), clock=lambda: now[0])
    shared.started(0)
    assert shared.order() == [1, 0]  # x: 1 / 1, y: 0 / 2
    shared.absorb([[], [b"1 - 5"]])
    assert shared.order() == [0, 1]  # x: 1 / 1, y: 5 / 2
    assert shared.snapshot() == ["- 1", "- 0"]
    # round_robin rotates whatever the others say.
    ring = Balancer([1.0, 1.0], "round_robin")
    assert ring.order_with([(9.0, 1), (0.0, 0)], [9.0, 0.0]) == [0, 1]
    assert ring.order_with([(9.0, 1), (0.0, 0)], [9.0, 0.0]) == [1, 0]


def test_only_balancers_with_a_choice_are_shared(redis_server: RedisServer) -> None:
    group = "http://127.0.0.1:9/v1?model=m | http://127.0.0.1:8/v1?model=m"
    store = RedisState(ns_url(redis_server))
    client = Client(f"{group}, http://127.0.0.1:7/v1?model=m", state=store, balancing="latency")
    members = client._router.members
    assert isinstance(members[0].balancer, SharedBalancer)
    assert members[1].balancer is members[0].balancer
    assert type(members[2].balancer) is Balancer  # alone in its group: nothing to learn
    client.close()
    client = Client(group, state=store, balancing="round_robin")
    assert type(client._router.members[0].balancer) is Balancer
    client.close()
    store.close()


def test_latency_estimates_reach_another_process_within_a_flush(redis_server: RedisServer) -> None:
    state = ns_url(redis_server)
    stores = [RedisState(state), RedisState(state)]
    balancers = [s.balancer(["X", "Y"], Balancer([1.0, 1.0], "latency")) for s in stores]
    budgets = [s.budget(RetryBudget()) for s in stores]
    a, b = cast(list[SharedBalancer], balancers)
    budgets[1].record_request()  # b flushes now (nothing to read yet), next in a second
    b.started(1)
    b.finished(1, 0.01)  # b has only ever called Y...
    assert b.order() == [0, 1]  # ...so X, unknown, comes first
    for i, seconds in ((0, 0.3), (1, 0.01)):
        a.started(i)
        a.finished(i, seconds)
    start = time.monotonic()
    budgets[0].record_request()  # a's first flush writes both
    assert wait_until(lambda: budgets[1].record_request() or b.order() == [1, 0], 3)
    assert time.monotonic() - start < FLUSH_INTERVAL + 0.5
    cluster = b.cluster()
    assert cluster is not None and cluster[0][0] == pytest.approx(0.3)
    # Keys: per backend, named by digest, expiring; one field per balancer.
    r = raw(redis_server)
    key = f"llmrouter:{parse_state_url(state)[1]}:balancer:{key_id('X')}"
    assert set(r.hkeys(key)) == {a.field, b.field} and 0 < r.pttl(key) <= 6000
    assert r.hget(key, a.field).split()[1:] == ["0.300000", "0"]
    for store in stores:
        store.close()


async def test_async_stores_share_balancers_by_flush_and_on_subscribing(
    redis_server: RedisServer,
) -> None:
    state = ns_url(redis_server)
    one, two = AsyncRedisState(state), AsyncRedisState(state)
    a = one.balancer(["X", "Y"], Balancer([1.0, 1.0], "latency"))
    b = two.balancer(["X", "Y"], Balancer([1.0, 1.0], "latency"))
    assert isinstance(a, SharedBalancer) and isinstance(b, SharedBalancer)
    a.started(0)
    a.finished(0, 0.3)
    a.started(1)
    a.finished(1, 0.01)
    one.budget(RetryBudget()).flush()  # a task: the router never waits on it
    await asyncio.wait_for(asyncio.gather(*one._tasks), 2)
    assert b.order() == [0, 1]
    two.start()  # subscribing reads the cluster's view before any request
    assert await asyncio.to_thread(wait_until, lambda: b.order() == [1, 0], 3)
    assert two.subscribed
    await one.aclose()
    await two.aclose()


def test_a_slow_backend_seen_by_one_process_is_avoided_by_another(
    redis_server: RedisServer, fakes: tuple[OpenAIFake, OpenAIFake]
) -> None:
    a, b = fakes
    state = ns_url(redis_server)
    with FaultProxy(a.port) as slow:
        slow.script(*[Fault("delay", seconds=0.3)] * 10)
        x, y = f"{slow.url}?model=m", f"{b.url}?model=m"
        first = Workers(1, f"{x} | {y}", state, cooldown=30.0, balancing="latency")
        try:
            # Unknown first, then the faster one; a flush a second in shares what it saw.
            served = first.ask(0, "request_for", FLUSH_INTERVAL + 0.3)
            assert served[0] == x and set(served[1:]) == {y}
            second = Workers(1, f"{x} | {y}", state, cooldown=30.0, balancing="latency")
            try:  # never called x, and never will while y is faster
                assert second.ask(0, "request", 3) == [y] * 3
            finally:
                second.close()
        finally:
            first.close()
        assert slow.connections == 1  # the first process's one call
    r = raw(redis_server)
    keys = r.keys(f"llmrouter:{parse_state_url(state)[1]}:balancer:*")
    assert sorted(keys) == sorted(
        f"llmrouter:{parse_state_url(state)[1]}:balancer:{key_id(u)}" for u in (x, y)
    )


# -- the gateway's rate limits ----------------------------------------------------------------


async def test_shared_token_bucket_is_atomic_and_falls_back(redis_server: RedisServer) -> None:
    store = AsyncRedisState(ns_url(redis_server))
    limiter = SharedRateLimiter(store, requests_per_minute=2, tokens_per_minute=100)
    other = SharedRateLimiter(store, requests_per_minute=2)
    assert await limiter.admit_request("team") is None
    assert await other.admit_request("team") is None
    denial = await limiter.admit_request("team")
    assert denial is not None and 29 < denial.retry_after <= 30
    assert await limiter.reserve_tokens("team", 90) == (90, None)
    await limiter.settle_tokens("team", 90, 120)  # 20 in debt
    _, denial = await limiter.reserve_tokens("team", 1)
    assert denial is not None and denial.limit == "tokens"
    await store.aclose()
    assert await limiter.admit_request("team") is None  # store closed: local buckets decide


def _gateway(port: int, backend: str, state: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "LLMROUTER_URL": backend, "LLMROUTER_STATE": state}
    env.pop("LLMROUTER_API_KEYS", None)
    cmd = [sys.executable, "-m", "llmrouter", "serve", "--port", str(port), "--rpm", "3"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_rate_limits_hold_across_two_gateway_processes(
    redis_server: RedisServer, fakes: tuple[OpenAIFake, OpenAIFake]
) -> None:
    a, _ = fakes
    state = ns_url(redis_server)
    ports = [free_port(), free_port()]
    procs = [_gateway(port, f"{a.url}?model=m", state) for port in ports]
    try:
        for port, proc in zip(ports, procs, strict=True):
            ok = wait_until(lambda port=port: _up(port), 20)
            assert ok, proc.stdout.read1().decode() if proc.stdout else ""  # type: ignore[union-attr]
        codes = []
        for i in range(8):
            resp = httpx2.post(
                f"http://127.0.0.1:{ports[i % 2]}/v1/chat/completions",
                json={"model": "m", "messages": HI},
                timeout=10,
            )
            codes.append(resp.status_code)
        assert codes.count(200) == 3 and codes.count(429) == 5, codes  # 3 per minute in all
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)


def _up(port: int) -> bool:
    try:
        return httpx2.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
    except httpx2.TransportError:
        return False


# -- Redis down and back ----------------------------------------------------------------------


async def test_redis_outage_falls_back_logs_once_and_recovers(
    own_redis: RedisServer,
    fakes: tuple[OpenAIFake, OpenAIFake],
    caplog: pytest.LogCaptureFixture,
) -> None:
    a, b = fakes
    caplog.set_level(logging.INFO, logger="llmrouter")
    store = AsyncRedisState(own_redis.url, backoff=0.2)
    client = AsyncClient(
        f"{a.url}?model=m, {b.url}?model=m",
        state=store,
        retry_policy=RetryPolicy.testing(max_retries=0),
        circuit_breaker=lambda: CircuitBreaker(failure_threshold=1, cooldown=30),
    )
    breaker = client._router.members[0].breaker
    resp = await client.chat.completions.create(messages=HI)
    assert resp.route.backend.startswith(a.url)
    assert await a.async_wait_for(lambda: store.subscribed)

    own_redis.stop()
    assert await a.async_wait_for(lambda: not store.active, 5)
    a.script(FAIL)
    for _ in range(5):  # all served: a fails once, its local breaker opens, b serves the rest
        resp = await client.chat.completions.create(messages=HI)
        assert resp.route.backend.startswith(b.url)
    assert breaker.state == "open"
    down = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(down) == 1 and "unreachable" in down[0].getMessage()
    assert "127.0.0.1" in down[0].getMessage()

    own_redis.start()
    assert await a.async_wait_for(lambda: store.subscribed and store.active, 10)
    assert any("reachable again" in r.getMessage() for r in caplog.records)
    breaker.trip()  # shared again: the open state reaches Redis
    key = f"llmrouter:default:breaker:{key_id(client._router.members[0].name)}:open"
    assert await a.async_wait_for(lambda: raw(own_redis).pttl(key) > 0)
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    await client.aclose()
    await store.aclose()

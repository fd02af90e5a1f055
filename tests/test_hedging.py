"""Hedged requests (async only): the first backend to answer wins, the other is cancelled."""

from __future__ import annotations

import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from llmrouter import AsyncClient, Client, ConfigError
from llmrouter.events import Event
from llmrouter.policy import RetryPolicy
from tests.fakes.fault_proxy import Fault, FaultProxy

pytestmark = pytest.mark.llama_server

SHORT = [{"role": "user", "content": "Say hi."}]


@pytest.fixture
def pair(llama_server: str) -> Iterator[tuple[FaultProxy, FaultProxy]]:
    port = urlsplit(llama_server).port
    assert port is not None
    with FaultProxy(port) as a, FaultProxy(port) as b:
        yield a, b


def url(proxy: FaultProxy) -> str:
    return f"{proxy.url}?model=smollm2"


@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "stream"])
async def test_slow_backend_is_hedged_and_cancelled(
    pair: tuple[FaultProxy, FaultProxy], streamed: bool
) -> None:
    a, b = pair
    a.script(Fault("delay", seconds=30))
    events: list[Event] = []
    async with AsyncClient(f"{url(a)}, {url(b)}", hedge=0.2, on_event=events.append,
                           retry_policy=RetryPolicy.testing()) as client:  # fmt: skip
        started = time.monotonic()
        if streamed:
            stream = await client.chat.completions.create(messages=SHORT, max_tokens=8,
                                                          stream=True)  # fmt: skip
            async with stream:
                text = "".join([c.choices[0].delta.content or "" async for c in stream
                                if c.choices])  # fmt: skip
            route = stream.route
            assert text
        else:
            resp = await client.chat.completions.create(messages=SHORT, max_tokens=8)
            route = resp.route
        elapsed = time.monotonic() - started
    assert elapsed < 10  # did not wait for the 30 s backend
    assert route.backend == url(b)
    assert [a_.backend for a_ in route.attempts] == [url(a), url(b)]  # the winner last
    assert "cancelled" in str(route.attempts[0].error)
    assert route.attempts[1].error is None
    assert any(e.kind == "hedge" for e in events)
    assert (a.connections, b.connections) == (1, 1)


async def test_fast_backend_is_not_hedged(pair: tuple[FaultProxy, FaultProxy]) -> None:
    a, b = pair
    async with AsyncClient(f"{url(a)}, {url(b)}", hedge=5.0) as client:
        resp = await client.chat.completions.create(messages=SHORT, max_tokens=2)
    assert resp.route.backend == url(a) and b.connections == 0


async def test_p95_hedge_delay_learns_from_latencies(pair: tuple[FaultProxy, FaultProxy]) -> None:
    a, b = pair
    async with AsyncClient(f"{url(a)}, {url(b)}", hedge="p95") as client:
        router = client._router
        assert router.hedge_delay() == 1.0  # no observations yet
        for _ in range(20):
            router.observe_latency(0.05)
        assert router.hedge_delay() == pytest.approx(0.05)


def test_hedging_is_async_only() -> None:
    with pytest.raises(TypeError, match="hedge"):  # the sync client has no such parameter
        Client("vllm://a", hedge=0.5)  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match="expected a delay"):
        AsyncClient("vllm://a", hedge=-1)

"""What only the async client can show about the in-process engine: the loop stays free."""

from __future__ import annotations

import asyncio

import pytest

from llmrouter import AsyncClient
from tests.conftest import PARIS

pytestmark = pytest.mark.local_engine


async def test_generation_does_not_block_the_event_loop() -> None:
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            await asyncio.sleep(0.005)
            ticks += 1

    async with AsyncClient("local://smollm2") as client:
        await client.chat.completions.create(messages=PARIS, max_tokens=1)  # load the model
        task = asyncio.create_task(ticker())
        loop = asyncio.get_running_loop()
        started = loop.time()
        await client.chat.completions.create(
            messages=[{"role": "user", "content": "Count from 1 to 100."}],
            max_tokens=100,
            temperature=0,
        )
        elapsed = loop.time() - started
        stop.set()
        await task
    # A blocked loop would tick about once; a free one ticks every few milliseconds.
    assert ticks >= max(3, int(elapsed / 0.005 * 0.2))


async def test_concurrent_requests_share_one_model_safely() -> None:
    async with AsyncClient("local://smollm2") as client:
        results = await asyncio.gather(
            *[
                client.chat.completions.create(messages=PARIS, max_tokens=32, temperature=0)
                for _ in range(3)
            ]
        )
    assert all("Paris" in r.choices[0].message.content for r in results)

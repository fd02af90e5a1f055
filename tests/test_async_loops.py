"""One ``AsyncClient`` used from several event loops (``asyncio.run`` twice, as scripts and some
test runners do), and one dropped without ``close()``: each works, and aiohttp never complains
about an "Unclosed client session" or connector (its session is let go per loop)."""

from __future__ import annotations

import asyncio
import gc

import pytest

from llmrouter import AsyncClient

HI = [{"role": "user", "content": "hi"}]


def test_one_client_across_loops_and_dropped_unclosed(
    llama_server: str, caplog: pytest.LogCaptureFixture
) -> None:
    clients = [AsyncClient(base_url=llama_server, api_key="sk-loops")]

    async def ask() -> str | None:
        resp = await clients[0].chat.completions.create(messages=HI, max_tokens=2)
        return resp.choices[0].finish_reason

    with caplog.at_level("DEBUG", logger="asyncio"):
        assert asyncio.run(ask()) == "length"
        assert asyncio.run(ask()) == "length"  # a new loop: a fresh session, the old let go
        clients.clear()  # never closed, as in the openai README's asyncio.run(main()) example
        gc.collect()
    assert "Unclosed" not in caplog.text

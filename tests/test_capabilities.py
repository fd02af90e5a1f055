"""A backend that cannot serve a request as asked is skipped, never silently degraded."""

from __future__ import annotations

import pytest

from llmrouter import AsyncClient, Client, InvalidRequestError
from tests.fakes.openai_fake import OpenAIFake

MESSAGES = [{"role": "user", "content": "hi"}]


def test_backend_lacking_a_capability_is_skipped_in_a_chain() -> None:
    with OpenAIFake(models=["m"]) as fake, Client(f"local://smollm2, {fake.url}?model=m") as client:
        # llama.cpp in process generates one choice: n=2 goes to the next backend instead.
        resp = client.chat.completions.create(messages=MESSAGES, n=2)
        first = resp.route.attempts[0]
        assert first.skipped and isinstance(first.error, InvalidRequestError)
        assert resp.route.backend == f"{fake.url}?model=m"
        assert len(fake.chat_requests) == 1 and fake.chat_requests[0].json["n"] == 2


async def test_no_backend_with_the_capability_raises_the_reason() -> None:
    async with AsyncClient("local://smollm2") as client:
        with pytest.raises(InvalidRequestError, match="n must be 1"):
            await client.chat.completions.create(messages=MESSAGES, n=2)

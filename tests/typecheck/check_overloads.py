"""Checked by ``mypy --strict`` in CI (not run by pytest): the overloads type streams right."""

from __future__ import annotations

from typing_extensions import assert_type

from llmrouter import AsyncClient, AsyncStream, ChatCompletion, Client, Stream

MESSAGES = [{"role": "user", "content": "hi"}]


def sync_shapes(client: Client, flag: bool) -> None:
    assert_type(client.chat.completions.create(messages=MESSAGES), ChatCompletion)
    assert_type(client.chat.completions.create(messages=MESSAGES, stream=False), ChatCompletion)
    assert_type(client.chat.completions.create(messages=MESSAGES, stream=True), Stream)
    assert_type(
        client.chat.completions.create(messages=MESSAGES, stream=flag), ChatCompletion | Stream
    )


async def async_shapes(client: AsyncClient) -> None:
    assert_type(await client.chat.completions.create(messages=MESSAGES), ChatCompletion)
    stream = await client.chat.completions.create(messages=MESSAGES, stream=True, max_tokens=5)
    assert_type(stream, AsyncStream)
    async with stream:
        async for chunk in stream:
            assert_type(chunk.choices[0].delta.content, str | None)

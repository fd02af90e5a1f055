"""A backend's context window, learned from discovery, steers context-length failover."""

from __future__ import annotations

from llmrouter import Client
from tests.fakes.tgi_fake import TGIFake

MESSAGES = [{"role": "user", "content": "hi"}]


def test_tgi_info_teaches_the_context_window() -> None:
    with TGIFake(max_total_tokens=2048) as small, TGIFake(max_total_tokens=8192) as large:
        chain = f"tgi://127.0.0.1:{small.port}, tgi://127.0.0.1:{large.port}"
        with Client(chain) as client:
            client.chat.completions.create(messages=MESSAGES, max_tokens=4)
            small_backend, large_backend = (m.backend for m in client._router.members)
            assert small_backend.max_context == 2048  # learned from GET /info
            assert large_backend.max_context is None  # never asked yet

"""Keys never appear in a repr, a str, a log line or an error message."""

from __future__ import annotations

import logging

import httpx2
import pytest

from llmrouter import AllBackendsFailedError, AuthenticationError, Client
from llmrouter._http import SyncHTTPTransport
from llmrouter.config import parse_backend
from llmrouter.policy import RetryPolicy

KEY = "sk-live-TOPSECRET-abcdef0123456789"


def test_key_is_sent_but_never_shown(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MY_KEY", KEY)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    seen_auth: list[str] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen_auth.append(request.headers.get("authorization", ""))
        if "a.test" in str(request.url):
            return httpx2.Response(401, json={"error": "Unauthorized"})
        return httpx2.Response(503, text="upstream down")

    caplog.set_level(logging.DEBUG)
    client = Client(
        "http://a.test/v1?model=m&api_key_env=MY_KEY, openai+http://b.test?model=m",
        transport=SyncHTTPTransport(transport=httpx2.MockTransport(handler)),
        retry_policy=RetryPolicy.testing(max_retries=0),
    )
    with pytest.raises(AllBackendsFailedError) as info:
        client.chat.completions.create(messages=[{"role": "user", "content": "hi"}])
    assert seen_auth == [f"Bearer {KEY}", f"Bearer {KEY}"]
    error = info.value
    assert isinstance(error.errors[0], AuthenticationError)
    shown = [
        repr(client),
        str(client.backends),
        repr(client.backends[0]),
        str(error),
        repr(error),
        *map(str, error.errors),
        *map(repr, error.errors),
        *(a.describe() for a in error.attempts),
        caplog.text,
    ]
    for text in shown:
        assert KEY not in text
    assert "a.test" in str(error) and "b.test" in str(error)


def test_userinfo_keys_stay_hidden() -> None:
    spec = parse_backend(f"https://me:{KEY}@host.test/v1", {})
    assert KEY not in repr(spec) and KEY not in str(spec) and KEY not in spec.name
    assert repr(spec.api_key) == "Secret('********')"

"""Presets for OpenAI-compatible providers: data, keys, documented quirks, a round trip."""

from __future__ import annotations

import pytest

import llmrouter
from llmrouter import ConfigError, InvalidRequestError
from llmrouter.backends import presets, registry
from llmrouter.config import parse_backend
from llmrouter.policy import RetryPolicy
from tests.fakes.openai_fake import OpenAIFake


@pytest.mark.parametrize("preset", presets.PRESETS, ids=lambda p: p.scheme)
def test_each_preset_is_declared_and_needs_its_key(preset: presets.Preset) -> None:
    assert registry.BUILTIN_SCHEMES[preset.scheme] == "llmrouter.backends.presets"
    env = {preset.key_env[0]: "sk-test"}
    spec = parse_backend(f"{preset.scheme}://?model=m", env=env)
    assert spec.base_url == preset.base_url and spec.api_key is not None
    with pytest.raises(ConfigError, match=preset.key_env[0]):
        parse_backend(f"{preset.scheme}://?model=m", env={})


def test_documented_rejections_are_refused_before_sending(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GROQ_API_KEY", "gsk-test")
    monkeypatch.setenv("CEREBRAS_API_KEY", "csk-test")
    with OpenAIFake(models=["m"], computed=True) as fake:
        for scheme, kw in (
            ("groq", {"logit_bias": {"1": 1}}),
            ("cerebras", {"presence_penalty": 0.5}),
        ):
            url = f"{scheme}+http://127.0.0.1:{fake.port}/v1?model=m"
            with llmrouter.Client(url, retry_policy=RetryPolicy.testing(max_retries=0)) as c:
                with pytest.raises(InvalidRequestError):
                    c.chat.completions.create(messages=[{"role": "user", "content": "hi"}], **kw)
                resp = c.chat.completions.create(messages=[{"role": "user", "content": "hi"}])
                assert resp.choices[0].message.content == "Echo: hi"
        assert all(r.headers["authorization"].endswith("sk-test") for r in fake.chat_requests)
        assert len(fake.chat_requests) == 2


def test_mistral_drops_bookkeeping_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MISTRAL_API_KEY", "m-test")
    with OpenAIFake(models=["m"], computed=True) as fake:
        url = f"mistral+http://127.0.0.1:{fake.port}/v1?model=m"
        with llmrouter.Client(url) as c:
            c.chat.completions.create(messages=[{"role": "user", "content": "hi"}], store=True)
        assert "store" not in fake.chat_requests[-1].json

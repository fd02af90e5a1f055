"""The example plugin ``examples/llamacpp-native`` (installed by pip in CI: scripts/test.sh):
found by scheme alone in a fresh interpreter, through the conformance kit against its loopback
fake, and against the real llama.cpp server the suite starts (grammar, stop, streaming)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from typing import Any, ClassVar

import pytest

import llmrouter
from llmrouter.testing.conformance import AdapterFactory, ConformanceSuite
from tests.conftest import PARIS

native = pytest.importorskip(
    "llmrouter_llamacpp_native.fake",
    reason="pip install ./examples/llamacpp-native (scripts/test.sh does)",
)


class TestLlamacppNativeConformance(ConformanceSuite):
    adapters: ClassVar[Mapping[str, AdapterFactory]] = {"llamacpp-native": native.start_fake}


def native_url(llama_server: str) -> str:
    return llama_server.replace("http://", "llamacpp-native://").removesuffix("/v1")


@pytest.mark.llama_server
def test_installed_plugin_answers_by_scheme_alone(llama_server: str) -> None:
    """A fresh interpreter, no plugin import: the entry point is all it takes."""
    code = f"""
        import sys, llmrouter
        client = llmrouter.Client({native_url(llama_server)!r})
        resp = client.chat.completions.create(messages={PARIS!r}, temperature=0, max_tokens=30)
        print(resp.choices[0].message.content)
        loaded = "llmrouter_llamacpp_native" in sys.modules
        print(resp.route.backend, resp.usage.completion_tokens > 0, loaded)
    """
    env = {k: v for k, v in os.environ.items() if k not in ("LLMROUTER_URL", "PYTHONPATH")}
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        cwd="/",  # nothing from the checkout on sys.path: only what pip installed
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    answer, route = out.stdout.strip().splitlines()[-2:]
    assert "Paris" in answer
    assert route.split() == [native_url(llama_server), "True", "True"]


@pytest.mark.llama_server
@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_real_server_answers_plain_and_streamed(
    llama_server: str, mode: str, stream: bool
) -> None:
    kw: dict[str, Any] = {"messages": PARIS, "temperature": 0, "max_tokens": 30}
    url = native_url(llama_server)
    if mode == "sync":
        with llmrouter.Client(url) as client:
            if stream:
                with client.chat.completions.create(stream=True, **kw) as s:
                    text = "".join(c.choices[0].delta.content or "" for c in s if c.choices)
            else:
                resp = client.chat.completions.create(**kw)
                text = resp.choices[0].message.content or ""
                assert resp.usage is not None and resp.usage.completion_tokens > 0
    else:
        async with llmrouter.AsyncClient(url) as aclient:
            if stream:
                async with await aclient.chat.completions.create(stream=True, **kw) as s:
                    text = "".join([c.choices[0].delta.content or "" async for c in s if c.choices])
            else:
                resp = await aclient.chat.completions.create(**kw)
                text = resp.choices[0].message.content or ""
    assert "Paris" in text
    assert "<|im_end|>" not in text  # the template's end marker is a stop sequence


@pytest.mark.llama_server
def test_real_server_grammar_and_stop(llama_server: str) -> None:
    with llmrouter.Client(native_url(llama_server)) as client:
        color = client.chat.completions.create(
            messages=[{"role": "user", "content": "Name a color."}],
            temperature=0,
            extra_body={"grammar": 'root ::= "red" | "blue" | "green"'},
        )
        assert color.choices[0].message.content in ("red", "blue", "green")
        cut = client.chat.completions.create(messages=PARIS, temperature=0, stop=["Paris"])
        content = cut.choices[0].message.content or ""
        assert "Paris" not in content and content.strip()
        assert cut.choices[0].finish_reason == "stop"
        with pytest.raises(llmrouter.InvalidRequestError):
            client.chat.completions.create(
                messages=PARIS, tools=[{"type": "function", "function": {"name": "f"}}]
            )

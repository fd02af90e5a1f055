"""``vllm+local://``: URL parsing, the request plan (pure), and the spawn-guard message."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from llmrouter import ConfigError, InvalidRequestError
from llmrouter._request import ChatRequest
from llmrouter.backends import vllm_engine
from llmrouter.config import parse_backend
from tests.conftest import VLLM_ENV, VLLM_MAX_MODEL_LEN

HI = [{"role": "user", "content": "hi"}]


def test_scheme_with_plus_local_is_its_own_scheme() -> None:
    spec = parse_backend("vllm+local:///models/llama?tensor_parallel_size=2&enforce_eager=true")
    assert (spec.kind, spec.scheme, spec.location) == (
        "llmrouter.backends.vllm_engine",
        "vllm+local",
        "/models/llama",
    )
    assert vllm_engine.engine_kwargs(spec) == {
        "model": "/models/llama",
        "tensor_parallel_size": 2,
        "enforce_eager": True,
    }
    hub = parse_backend("vllm+local://meta-llama/Llama-3.1-8B-Instruct?gpu_memory_utilization=0.8")
    assert hub.location == "meta-llama/Llama-3.1-8B-Instruct"
    assert vllm_engine.engine_kwargs(hub)["gpu_memory_utilization"] == 0.8
    # +http / +https stay transport suffixes of the other schemes.
    assert parse_backend("vllm+https://gpu-1").base_url == "https://gpu-1:8000/v1"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("vllm+local://", "expected vllm+local://ORG/MODEL"),
        ("vllm+local:///m?n_ctx=4", "unknown query parameter 'n_ctx'"),
        ("vllm+local:///m?max_model_len=big", "expected a whole number"),
        ("vllm+local:///m?enforce_eager=maybe", "expected true or false"),
        ("vllm+ftp://x", "expected '+http' or '+https'"),
    ],
)
def test_bad_urls_say_what_was_expected(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        vllm_engine.engine_kwargs(parse_backend(url))


def test_plan_maps_openai_parameters_and_sets_max_tokens_explicitly() -> None:
    request = ChatRequest(
        messages=HI,
        params={
            "temperature": 0.2,
            "top_p": 0.9,
            "seed": 7,
            "stop": ["\n"],
            "max_completion_tokens": 64,
            "logit_bias": {"42": 5},
            "stream_options": {"include_usage": True},
            "user": "ignored",
        },
        extra_body={"top_k": 20, "chat_template_kwargs": {"enable_thinking": False}},
    )
    plan = vllm_engine.build_plan(request, "m")
    assert plan.sampling == {
        "temperature": 0.2,
        "top_p": 0.9,
        "seed": 7,
        "stop": ["\n"],
        "logit_bias": {42: 5.0},
        "max_tokens": 64,
        "top_k": 20,
    }
    assert plan.template_kwargs == {"enable_thinking": False}
    assert plan.include_usage and plan.structured is None
    # No max_tokens: None, which the engine turns into "the rest of the context", never 16.
    assert vllm_engine.build_plan(ChatRequest(messages=HI), "m").sampling == {"max_tokens": None}


def test_plan_structured_outputs_and_tools() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    plan = vllm_engine.build_plan(ChatRequest(messages=HI, params={"response_format": fmt}), "m")
    assert plan.structured == {"json": schema}
    tool = {"type": "function", "function": {"name": "f", "parameters": schema}}
    named = vllm_engine.build_plan(
        ChatRequest(
            messages=HI,
            params={
                "tools": [tool],
                "tool_choice": {"type": "function", "function": {"name": "f"}},
            },
        ),
        "m",
    )
    assert (named.tool_mode, named.tool_name, named.structured) == ("named", "f", {"json": schema})
    assert named.template_kwargs == {"tools": [tool]}
    required = vllm_engine.build_plan(
        ChatRequest(messages=HI, params={"tools": [tool], "tool_choice": "required"}), "m"
    )
    assert required.tool_mode == "required" and required.structured is not None
    with pytest.raises(InvalidRequestError, match="tool_choice='auto'"):
        vllm_engine.build_plan(ChatRequest(messages=HI, params={"tools": [tool]}), "m")


@pytest.mark.parametrize(
    ("params", "extra", "param"),
    [
        ({"n": 2}, {}, "n"),
        ({"logprobs": True}, {}, "logprobs"),
        ({"audio": {}}, {}, "audio"),
        ({}, {"mirostat": 1}, "mirostat"),
    ],
)
def test_plan_refuses_what_it_cannot_honour(
    params: dict[str, object], extra: dict[str, object], param: str
) -> None:
    with pytest.raises(InvalidRequestError) as info:
        vllm_engine.build_plan(ChatRequest(messages=HI, params=params, extra_body=extra), "m")
    assert info.value.param == param


@pytest.mark.vllm
def test_unguarded_script_gets_an_error_that_says_to_guard_it(
    vllm_model: str, tmp_path: Path
) -> None:
    script = tmp_path / "unguarded.py"
    url = f"vllm+local://{vllm_model}?max_model_len={VLLM_MAX_MODEL_LEN}&enforce_eager=true"
    script.write_text(
        textwrap.dedent(
            f"""
            import llmrouter
            client = llmrouter.Client({url!r})
            client.chat.completions.create(messages=[{{"role": "user", "content": "hi"}}])
            """
        )
    )
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, **VLLM_ENV, "PYTHONPATH": root}
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 1
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("llmrouter.errors.ConfigError: ")
    assert 'must run under `if __name__ == "__main__":`' in last

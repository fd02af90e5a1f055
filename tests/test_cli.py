"""``python -m llmrouter chat`` and the ``llmrouter`` command, run for real."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

SYSTEM = "You are a helpful assistant. Answer in one short sentence."


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in ("LLMROUTER_URL", "OPENAI_BASE_URL", "OPENAI_API_KEY")
    }
    return subprocess.run(
        [sys.executable, "-m", "llmrouter", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**clean, **(env or {})},
    )


@pytest.mark.llama_server
def test_chat_streams_from_the_configured_server(llama_server: str) -> None:
    out = _run(
        "chat",
        "What is the capital of France?",
        "--system",
        SYSTEM,
        "--temperature",
        "0",
        env={"LLMROUTER_URL": llama_server},
    )
    assert out.returncode == 0, out.stderr
    assert "Paris" in out.stdout
    assert llama_server in out.stderr  # the route goes to stderr, the answer to stdout


@pytest.mark.llama_server
def test_chat_json_prints_the_response(llama_server: str) -> None:
    out = _run(
        "chat",
        "What is the capital of France?",
        "--system",
        SYSTEM,
        "--json",
        "--temperature",
        "0",
        "--url",
        llama_server,
    )
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert (
        body["object"] == "chat.completion" and "Paris" in body["choices"][0]["message"]["content"]
    )


@pytest.mark.local_engine
def test_chat_uses_the_embedded_model_when_nothing_is_configured() -> None:
    out = _run("chat", "What is the capital of France?", "--system", SYSTEM, "--temperature", "0")
    assert out.returncode == 0, out.stderr
    assert "Paris" in out.stdout
    assert "local://smollm2" in out.stderr


def test_errors_are_one_line_not_a_traceback(closed_url: str) -> None:
    out = _run("chat", "hi", "--url", closed_url)
    assert out.returncode == 1
    assert out.stderr.startswith("llmrouter: BackendConnectionError:")
    assert "Traceback" not in out.stderr


def test_console_script_is_installed() -> None:
    exe = shutil.which("llmrouter")
    assert exe is not None
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "chat" in out.stdout

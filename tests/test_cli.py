"""``python -m llmrouter chat`` and the ``llmrouter`` command, run for real."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.anthropic_fake import API_KEY as ANTHROPIC_KEY
from tests.fakes.anthropic_fake import AnthropicFake
from tests.fakes.ollama_fake import OllamaFake
from tests.fakes.openai_fake import Error, OpenAIFake, Stream, sse

SYSTEM = "You are a helpful assistant. Answer in one short sentence."


def _run(
    *args: str, env: dict[str, str] | None = None, input: str | None = None
) -> subprocess.CompletedProcess[str]:
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
        input=input if input is not None else "",
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


# -- chat: interactive sessions, --json, progress, --debug ----------------------------------


def _chat_turns(fake: OpenAIFake) -> list[list[dict[str, Any]]]:
    return [json.loads(r.body)["messages"] for r in fake.chat_requests]


def test_chat_interactive_keeps_the_conversation() -> None:
    with OpenAIFake(models=["m"], computed=True) as fake:
        out = _run(
            "chat",
            "--url",
            fake.url,
            "--system",
            "Be brief.",
            input="first question\n\nsecond question\n/exit\nnever sent\n",
        )
        turns = _chat_turns(fake)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["Echo: first question", "Echo: second question"]
    assert len(turns) == 2  # the blank line is skipped; nothing after /exit is sent
    assert turns[0] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first question"},
    ]
    assert turns[1] == [
        *turns[0],
        {"role": "assistant", "content": "Echo: first question"},
        {"role": "user", "content": "second question"},
    ]
    assert fake.url in out.stderr  # the route, once


def test_chat_interactive_reset_forgets_and_eof_ends() -> None:
    with OpenAIFake(models=["m"], computed=True) as fake:
        out = _run("chat", "--url", fake.url, input="one\n/reset\ntwo\n")  # no /exit: EOF
        turns = _chat_turns(fake)
    assert out.returncode == 0, out.stderr
    assert turns == [[{"role": "user", "content": "one"}], [{"role": "user", "content": "two"}]]


def test_chat_interactive_json_prints_one_response_per_line() -> None:
    with OpenAIFake(models=["m"], computed=True) as fake:
        out = _run("chat", "--url", fake.url, "--json", input="a\nb\n")
        turns = _chat_turns(fake)
    assert out.returncode == 0, out.stderr
    bodies = [json.loads(line) for line in out.stdout.splitlines()]
    assert [b["choices"][0]["message"]["content"] for b in bodies] == ["Echo: a", "Echo: b"]
    assert turns[1][1] == {"role": "assistant", "content": "Echo: a"}


def test_chat_interactive_goes_on_after_a_failed_turn() -> None:
    with OpenAIFake(models=["m"]) as fake:
        fake.script(Error(400, {"error": {"message": "bad turn", "type": "invalid_request"}}))
        out = _run("chat", "--url", fake.url, input="broken\nfine\n")
        turns = _chat_turns(fake)
    assert out.returncode == 1  # a turn failed
    assert out.stdout.strip() == "Hello!"
    assert "llmrouter: BadRequestError:" in out.stderr and "Traceback" not in out.stderr
    assert turns[1] == [{"role": "user", "content": "fine"}]  # the failed turn was dropped


def test_chat_ends_a_broken_answer_before_the_error_line() -> None:
    with OpenAIFake(models=["m"]) as fake:
        fake.script(Stream(sse("Hel", "lo", finish=None, done=False), cut=True))
        out = _run("chat", "hi", "--url", fake.url)
    assert out.returncode == 1
    assert out.stdout == "Hello\n"
    assert out.stderr.startswith("llmrouter: StreamInterruptedError:")


@pytest.mark.llama_server
def test_chat_interactive_with_the_real_server(llama_server: str) -> None:
    out = _run(
        "chat",
        "--url",
        llama_server,
        "--system",
        SYSTEM,
        "--temperature",
        "0",
        "--max-tokens",
        "24",
        input="What is the capital of France?\nAnd of Italy?\n/exit\n",
    )
    assert out.returncode == 0, out.stderr
    assert "Paris" in out.stdout
    assert len([line for line in out.stdout.splitlines() if line.strip()]) >= 2


@pytest.mark.local_engine
def test_chat_says_when_it_loads_the_embedded_model() -> None:
    out = _run("chat", "Say hi.", "--url", "local://smollm2", "--max-tokens", "4")
    assert out.returncode == 0, out.stderr
    assert "loading model local://smollm2" in out.stderr


def test_debug_shows_the_traceback(closed_url: str) -> None:
    closed_url += "?max_retries=0"  # fail fast
    for args in (
        ["chat", "hi", "--url", closed_url, "--debug"],
        ["--debug", "models", "--url", closed_url],
    ):
        out = _run(*args)
        assert out.returncode == 1
        assert "Traceback (most recent call last)" in out.stderr
        assert "llmrouter: BackendConnectionError:" in out.stderr


def test_errors_are_one_line_plus_a_hint(closed_url: str) -> None:
    out = _run("models", "--url", closed_url)
    lines = out.stderr.splitlines()
    assert out.returncode == 1
    assert lines[0].startswith("llmrouter: BackendConnectionError:")
    assert len(lines) == 2 and lines[1].strip().startswith("hint:")
    bad = _run("chat", "hi", "--url", "nosuch://host")
    assert bad.returncode == 1
    assert bad.stderr.startswith("llmrouter: ConfigError: unknown backend scheme")
    assert "Traceback" not in bad.stderr


def test_every_subcommand_runs_as_a_module() -> None:
    for command in ("chat", "check", "models", "plan", "serve"):
        out = _run(command, "--help")
        assert out.returncode == 0, (command, out.stderr)
        assert out.stdout.startswith("usage: llmrouter " + command)


# -- check and models -------------------------------------------------------------------------


@pytest.mark.llama_server
def test_check_reports_a_live_and_a_dead_backend(llama_server: str, closed_url: str) -> None:
    chain = f"{llama_server}, {closed_url}"
    out = _run("check", env={"LLMROUTER_URL": chain})
    assert out.returncode == 1, out.stderr
    table = out.stdout.splitlines()
    assert table[0].split() == [
        "BACKEND", "STATUS", "REACHABLE", "AUTH", "MODEL", "TTFT", "TOK/S", "EMBED"
    ]  # fmt: skip
    live = next(line for line in table if line.startswith(llama_server))
    dead = next(line for line in table if line.startswith(closed_url))
    assert live.split()[1:4] == ["ok", "yes", "yes"] and " ms" in live
    assert dead.split()[1:3] == ["DOWN", "no"]
    assert "1 of 2 backend(s) up" in out.stdout

    as_json = _run("check", "--json", "--url", chain)
    assert as_json.returncode == 1
    body = json.loads(as_json.stdout)
    first, second = body["backends"]
    assert body["ok"] is False
    assert first["backend"] == llama_server and first["ok"] is True
    assert first["model_present"] is True and first["ttft_ms"] > 0 and first["tokens"] >= 1
    assert second["backend"] == closed_url and second["reachable"] is False
    assert second["error"].startswith("BackendConnectionError")


def test_check_passes_when_every_backend_answers() -> None:
    with OpenAIFake(models=["m"], computed=True) as openai, AnthropicFake() as anthropic:
        out = _run(
            "check",
            "--json",
            "--url",
            f"{openai.url}, {anthropic.url}",
            env={"ANTHROPIC_API_KEY": ANTHROPIC_KEY},
        )
        sent = [json.loads(r.body) for r in openai.chat_requests + anthropic.message_requests]
    assert out.returncode == 0, out.stderr
    reports = json.loads(out.stdout)["backends"]
    assert [r["ok"] for r in reports] == [True, True]
    assert [r["model"] for r in reports] == ["m", "claude-fake-1"]
    assert [r["embeddings"] for r in reports] == [True, False]  # anthropic:// cannot embed
    assert all(body["stream"] is True and body["max_tokens"] == 8 for body in sent)


def test_check_tells_a_bad_key_and_a_missing_model_apart() -> None:
    with (
        OpenAIFake(models=["m"], api_key="right") as locked,
        OpenAIFake(models=["m"], computed=True) as open_,
    ):
        out = _run(
            "check",
            "--json",
            "--model",
            "absent",
            "--url",
            f"{locked.url}?api_key_env=TEST_KEY, {open_.url}",
            env={"TEST_KEY": "wrong"},
        )
    assert out.returncode == 1
    bad_key, no_model = json.loads(out.stdout)["backends"]
    assert bad_key["reachable"] is True and bad_key["authenticated"] is False
    assert bad_key["error"].startswith("AuthenticationError")
    assert no_model["authenticated"] is True and no_model["model_present"] is False
    assert "not in the model list" in no_model["error"]


def test_check_with_ollama_lists_models_without_a_model_to_test() -> None:
    with OllamaFake() as fake:
        listed = _run("check", "--url", fake.url)
        tested = _run("check", "--json", "--url", fake.url, "--model", "qwen3:0.6b")
    assert listed.returncode == 0, listed.stderr
    assert "pass --model to test one" in listed.stdout
    report = json.loads(tested.stdout)["backends"][0]
    assert tested.returncode == 0 and report["ok"] and report["model_present"]


@pytest.mark.llama_server
def test_models_lists_the_union(llama_server: str, closed_url: str) -> None:
    with OpenAIFake(models=["alpha", "beta"]) as fake:
        out = _run("models", "--url", f"{llama_server}, {fake.url}, {closed_url}")
        as_json = _run("models", "--json", "--url", f"{fake.url}, {closed_url}")
    assert out.returncode == 0, out.stderr
    ids = out.stdout.splitlines()
    assert ids[1:] == ["alpha", "beta"] and ids[0].endswith(".gguf")
    assert "warning:" in out.stderr and closed_url in out.stderr
    body = json.loads(as_json.stdout)
    assert body["object"] == "list" and [m["id"] for m in body["data"]] == ["alpha", "beta"]


# -- plan ---------------------------------------------------------------------------------------


def test_plan_preset_prints_the_arithmetic_and_its_assumptions() -> None:
    out = _run("plan", "llama-3.1-8b", "--requests-per-day", "10000")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "16.06 GB" in text  # 8.03 B x 16 bits / 8
    assert "131,072 bytes/token" in text  # 2 x 32 x 8 x 128 x 2
    assert "8,192 tokens x 1 sequence" in text
    assert "90%" in text and "as of" in text and "EXAMPLE" in text
    assert "break-even: 32,000 requests/day" in text  # RTX 4090: 292 / (30.4167 x 0.0003)


def test_plan_custom_model_json() -> None:
    out = _run(
        "plan",
        "--params",
        "70b",
        "--layers",
        "80",
        "--kv-heads",
        "8",
        "--head-dim",
        "128",
        "--precision",
        "fp8",
        "--gpu",
        "h100-80gb",
        "--json",
    )
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert plan["model"]["name"] == "custom" and plan["weights_gb"] == pytest.approx(70.0)
    assert plan["kv_bytes_per_token"] == 327680
    assert [(f["gpu"]["id"], f["count"]) for f in plan["fits"]] == [("h100-80gb", 2)]
    assert plan["prices"]["sources"] == ["llmrouter/data/plan.json"]


def test_plan_prices_file_overrides_and_adds(tmp_path: Path) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text(
        json.dumps(
            {
                "as_of": "2030-01",
                "gpus": {
                    "h100-80gb": {"usd_per_hour": 1.0},
                    "b200-192gb": {"name": "B200", "memory_gb": 192, "usd_per_hour": 5.0},
                },
            }
        )
    )
    out = _run("plan", "llama-3.1-70b", "--prices", str(prices), "--json")
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    fits = {f["gpu"]["id"]: f for f in plan["fits"]}
    assert fits["h100-80gb"]["monthly_usd"] == pytest.approx(2 * 730.0)  # 2 GPUs x $1 x 730 h
    assert fits["b200-192gb"]["count"] == 1 and fits["h100-80gb"]["gpu"]["memory_gb"] == 80
    assert plan["prices"]["as_of"] == "2030-01" and plan["prices"]["sources"][1] == str(prices)


def test_plan_errors_are_one_line(tmp_path: Path) -> None:
    for args in (
        ["plan", "no-such-model"],
        ["plan"],
        ["plan", "llama-3.1-8b", "--precision", "fp3"],
        ["plan", "--params", "lots"],
        ["plan", "llama-3.1-8b", "--prices", str(tmp_path / "missing.json")],
    ):
        out = _run(*args)
        assert out.returncode == 1, args
        assert out.stderr.startswith("llmrouter: ConfigError:"), out.stderr
        assert "Traceback" not in out.stderr and len(out.stderr.splitlines()) == 2

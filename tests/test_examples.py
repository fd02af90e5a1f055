"""Every file in ``examples/`` runs (or, for Docker, parses and names real flags).

The examples run as subprocesses, the way a reader would run them, with only the environment
they document: the embedded model, the real llama.cpp server (standing in for vLLM, which
speaks the same OpenAI protocol), and the loopback fakes for Ollama and SageMaker.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx2
import pytest
import yaml

from llmrouter import ConfigError, parse_chain
from tests.conftest import PARIS, free_port, stop_process, wait_ready
from tests.fakes.ollama_fake import OllamaFake
from tests.fakes.sagemaker_fake import ACCESS_KEY, ENDPOINT, SECRET_KEY, SageMakerFake

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

# What a developer's shell might carry that would change where an example's Client() goes.
_ROUTING_ENV = ("LLMROUTER_URL", "OPENAI_BASE_URL", "OPENAI_API_KEY", "OLLAMA_HOST")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _ROUTING_ENV}
    return {**env, **extra}


def _run(
    script: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env if env is not None else _env(),
    )


# ---------------------------------------------------------------------------------------------
# quickstart.py: the embedded model, nothing configured


@pytest.mark.local_engine
def test_quickstart_chats_and_streams_on_the_embedded_model() -> None:
    out = _run("quickstart.py")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "Paris" in lines[0]
    assert lines[1].startswith("[local://smollm2, ") and "1 attempt(s)]" in lines[1]
    assert lines[-1] == "[streamed by local://smollm2]"
    assert "".join(lines[2:-1]).strip()  # the streamed answer


# ---------------------------------------------------------------------------------------------
# dev_to_prod.py: Ollama on a laptop, vLLM in production, only LLMROUTER_URL changes


def test_dev_to_prod_on_ollama() -> None:
    with OllamaFake() as fake:
        url = f"ollama://127.0.0.1:{fake.port}?model=llama3.2"
        out = _run("dev_to_prod.py", env=_env(LLMROUTER_URL=url))
    assert out.returncode == 0, out.stderr
    # The fake echoes the question: once as a chat completion, once streamed.
    assert out.stdout.splitlines() == ["Echo: What is the capital of France?"] * 2
    assert f"[served by {url} after 1 attempt(s)]" in out.stderr
    assert f"[streamed by {url}]" in out.stderr


@pytest.mark.llama_server
def test_dev_to_prod_on_vllm(llama_server: str) -> None:
    model = httpx2.get(llama_server + "/models", timeout=10).json()["data"][0]["id"]
    port = urlsplit(llama_server).port
    url = f"vllm://127.0.0.1:{port}?model={quote(model, safe='')}"
    out = _run("dev_to_prod.py", env=_env(LLMROUTER_URL=url))
    assert out.returncode == 0, out.stderr
    answer, streamed = out.stdout.splitlines()
    assert "Paris" in answer and "Paris" in streamed
    assert "[served by vllm://127.0.0.1:" in out.stderr
    assert "[streamed by vllm://127.0.0.1:" in out.stderr


def test_dev_to_prod_reports_a_dead_backend_in_one_line(closed_url: str) -> None:
    out = _run("dev_to_prod.py", env=_env(LLMROUTER_URL=closed_url))
    assert out.returncode == 1
    assert out.stderr.startswith("error: BackendConnectionError:")
    assert "Traceback" not in out.stderr


# ---------------------------------------------------------------------------------------------
# fastapi_service.py: AsyncClient in a FastAPI app, failing over from a dead backend


@contextmanager
def _uvicorn(llmrouter_url: str) -> Iterator[str]:
    """Run ``examples/fastapi_service.py`` under uvicorn; yield its base URL."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--app-dir",
            str(EXAMPLES),
            "fastapi_service:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=_env(LLMROUTER_URL=llmrouter_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"

    def log() -> str:
        assert proc.stdout is not None
        return proc.stdout.read().decode()

    try:
        wait_ready(proc, base + "/health", 30, "the FastAPI example", log)
        yield base
    finally:
        stop_process(proc)


@pytest.fixture(scope="module")
def service(llama_server: str) -> Iterator[str]:
    """The service with a dead backend first in its chain, then the llama.cpp server."""
    with _uvicorn(f"http://127.0.0.1:{free_port()}/v1, {llama_server}") as base:
        yield base


@pytest.mark.llama_server
def test_fastapi_chat_fails_over_to_the_live_backend(service: str, llama_server: str) -> None:
    body = {"messages": PARIS, "temperature": 0, "max_tokens": 32}
    resp = httpx2.post(service + "/chat", json=body, timeout=60)
    assert resp.status_code == 200, resp.text
    data = resp.json()
    assert "Paris" in data["answer"]
    assert data["backend"] == llama_server
    assert data["attempts"] == 2  # the dead backend first, then the server
    assert data["total_tokens"] > 0


@pytest.mark.llama_server
def test_fastapi_stream_is_server_sent_events(service: str, llama_server: str) -> None:
    body = {"messages": PARIS, "temperature": 0, "max_tokens": 32}
    events: list[tuple[str, str]] = []
    with httpx2.stream("POST", service + "/chat/stream", json=body, timeout=60) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        event = "message"
        for line in resp.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((event, line.removeprefix("data: ")))
                event = "message"
    assert events[-1] == ("message", "[DONE]")
    kinds = [kind for kind, _ in events]
    assert "error" not in kinds
    text = "".join(json.loads(d)["delta"] for kind, d in events[:-2] if kind == "message")
    assert "Paris" in text
    assert events[-2][0] == "route"
    assert json.loads(events[-2][1]) == {"backend": llama_server, "attempts": 2}


@pytest.mark.llama_server
def test_fastapi_health(service: str, llama_server: str) -> None:
    resp = httpx2.get(service + "/health", timeout=10)
    assert resp.status_code == 200
    assert resp.json()["status"] == "ok"
    assert resp.json()["backends"][1] == llama_server


@pytest.mark.llama_server
@pytest.mark.parametrize(
    "body",
    [
        {"messages": []},
        {"messages": [{"role": "robot", "content": "hi"}]},
        {"messages": [{"role": "user", "content": ""}]},
        {"messages": [{"role": "user", "content": "hi"}], "temperature": 5},
        {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0},
    ],
)
def test_fastapi_rejects_invalid_requests_before_any_backend(
    service: str, body: dict[str, Any]
) -> None:
    resp = httpx2.post(service + "/chat", json=body, timeout=10)
    assert resp.status_code == 422, resp.text


def test_fastapi_dead_chain_is_a_502_not_a_broken_stream() -> None:
    dead = ", ".join(f"http://127.0.0.1:{free_port()}/v1" for _ in range(2))
    body = {"messages": [{"role": "user", "content": "hi"}]}
    with _uvicorn(dead) as base:
        plain = httpx2.post(base + "/chat", json=body, timeout=30)
        streamed = httpx2.post(base + "/chat/stream", json=body, timeout=30)
    for resp in (plain, streamed):
        assert resp.status_code == 502
        assert resp.json() == {"detail": "the language model is unavailable"}


# ---------------------------------------------------------------------------------------------
# gateway_two_vllm_plus_fallback.sh: the chain it documents parses

GATEWAY_SCRIPT = EXAMPLES / "gateway_two_vllm_plus_fallback.sh"


def _script_url() -> str:
    match = re.search(r'^export LLMROUTER_URL="([^"]+)"$', GATEWAY_SCRIPT.read_text(), re.M)
    assert match is not None
    return match.group(1)


def test_gateway_example_chain_is_two_vllm_replicas_then_openai() -> None:
    env = {"VLLM_API_KEY": "dummy-vllm-key", "OPENAI_API_KEY": "sk-dummy"}
    chain = parse_chain(_script_url(), env)
    assert [[spec.scheme for spec in group] for group in chain] == [["vllm", "vllm"], ["openai"]]
    replicas, (fallback,) = chain
    assert [spec.base_url for spec in replicas] == [
        "http://vllm-a:8000/v1",
        "http://vllm-b:8000/v1",
    ]
    for spec in replicas:
        assert spec.model == "llama-3.1-8b"
        assert spec.health_interval == 10
        assert spec.timeouts.ttft == 2
        assert spec.api_key is not None and spec.api_key.reveal() == "dummy-vllm-key"
    assert fallback.base_url == "https://api.openai.com/v1" and fallback.model == "gpt-4o-mini"
    assert fallback.api_key is not None and fallback.api_key.reveal() == "sk-dummy"


def test_gateway_example_chain_needs_the_fallback_key() -> None:
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        parse_chain(_script_url(), {"VLLM_API_KEY": "dummy-vllm-key"})


def test_gateway_example_script_is_valid_bash_and_refuses_to_start_without_keys() -> None:
    assert subprocess.run(["bash", "-n", str(GATEWAY_SCRIPT)], check=False).returncode == 0
    out = subprocess.run(
        ["bash", str(GATEWAY_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": os.environ["PATH"]},
    )
    assert out.returncode != 0 and "VLLM_API_KEY" in out.stderr


# ---------------------------------------------------------------------------------------------
# sagemaker.py: a signed call to a SageMaker endpoint (the loopback fake checks the signature)


def test_sagemaker_example_against_the_fake(tmp_path: Path) -> None:
    aws = {k: v for k, v in _env().items() if not k.startswith("AWS_")}
    aws.update(
        AWS_ACCESS_KEY_ID=ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=SECRET_KEY,
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=str(tmp_path / "no-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-credentials"),
    )
    with SageMakerFake() as fake:
        out = _run(
            "sagemaker.py",
            ENDPOINT,
            "--region",
            fake.region,
            "--endpoint-url",
            fake.endpoint_url,
            env=aws,
        )
        paths = [r.path for r in fake.invocations]
        failures = list(fake.auth_failures)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["Echo: What is the capital of France?"] * 2
    assert f"[sagemaker://{ENDPOINT}?region=" in out.stderr
    assert failures == []  # every request carried a valid SigV4 signature
    assert paths == [
        f"/endpoints/{ENDPOINT}/invocations",
        f"/endpoints/{ENDPOINT}/invocations-response-stream",
    ]


# ---------------------------------------------------------------------------------------------
# docker/: cannot run here (no Docker, no GPU); check what can be checked without them

DOCKER = EXAMPLES / "docker"

# vLLM's OpenAI server options (`vllm serve --help`, docs.vllm.ai "vllm serve"), the subset
# an example might use.
VLLM_FLAGS = {
    "--model", "--served-model-name", "--max-model-len", "--host", "--port", "--api-key",
    "--gpu-memory-utilization", "--tensor-parallel-size", "--pipeline-parallel-size", "--dtype",
    "--quantization", "--max-num-seqs", "--enable-prefix-caching", "--trust-remote-code",
    "--download-dir", "--revision", "--tokenizer", "--chat-template", "--generation-config",
    "--enable-auto-tool-choice", "--tool-call-parser", "--uvicorn-log-level", "--seed",
}  # fmt: skip

DOCKERFILE_KEYWORDS = {
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
    "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
}  # fmt: skip


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    return data


def _flags(command: list[str]) -> list[str]:
    return [arg for arg in command if arg.startswith("--")]


def _arg(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def _default(value: str) -> str:
    """``${NAME:-default}`` -> ``default`` (compose interpolation); anything else as is."""
    match = re.fullmatch(r"\$\{\w+:-(.*)\}", value)
    return match.group(1) if match else value


def _healthcheck_port(service: dict[str, Any]) -> int:
    test = " ".join(service["healthcheck"]["test"])
    match = re.search(r"http://(?:127\.0\.0\.1|localhost):(\d+)/health", test)
    assert match is not None, test
    return int(match.group(1))


def test_compose_runs_vllm_with_real_flags(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"vllm", "gateway"}
    vllm = compose["services"]["vllm"]
    assert vllm["image"].startswith("vllm/vllm-openai:")
    command = [str(arg) for arg in vllm["command"]]
    assert set(_flags(command)) <= VLLM_FLAGS
    assert {"--model", "--served-model-name", "--max-model-len"} <= set(_flags(command))
    assert int(_arg(command, "--max-model-len")) > 0
    # The key reaches vLLM through its environment variable, not the command line.
    assert "--api-key" not in command and "VLLM_API_KEY" in vllm["environment"]
    assert _healthcheck_port(vllm) == int(_arg(command, "--port"))
    assert vllm["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert "ports" not in vllm  # only the gateway is published


def test_compose_gateway_routes_to_the_vllm_service(compose: dict[str, Any]) -> None:
    vllm, gateway = compose["services"]["vllm"], compose["services"]["gateway"]
    command = gateway["command"]
    assert command[:4] == ["python", "-m", "llmrouter", "serve"]
    assert _arg(command, "--host") == "0.0.0.0"
    port = int(_arg(command, "--port"))
    assert gateway["ports"] == [f"{port}:{port}"]
    assert _healthcheck_port(gateway) == port
    env = gateway["environment"]
    assert "LLMROUTER_API_KEYS" in env  # a non-loopback bind needs keys
    assert gateway["depends_on"]["vllm"]["condition"] == "service_healthy"
    (group,) = parse_chain(_default(env["LLMROUTER_URL"]), {"VLLM_API_KEY": "dummy"})
    (spec,) = group
    vllm_command = [str(arg) for arg in vllm["command"]]
    assert spec.base_url == f"http://vllm:{_arg(vllm_command, '--port')}/v1"
    assert spec.model == _arg(vllm_command, "--served-model-name")
    build = gateway["build"]
    assert (DOCKER / build["context"] / build["dockerfile"]).resolve() == DOCKER / "Dockerfile"


def test_compose_gateway_flags_are_the_cli_flags(compose: dict[str, Any]) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "llmrouter", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    for flag in _flags(compose["services"]["gateway"]["command"]):
        assert re.search(rf"(^|\s|\[){re.escape(flag)}\b", out.stdout), flag


def _dockerfile_instructions() -> list[tuple[str, str]]:
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in (DOCKER / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).partition(" ")
        instructions.append((keyword, rest.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def test_dockerfile_is_well_formed(compose: dict[str, Any]) -> None:
    instructions = _dockerfile_instructions()
    keywords = [keyword for keyword, _ in instructions]
    assert set(keywords) <= DOCKERFILE_KEYWORDS, set(keywords) - DOCKERFILE_KEYWORDS
    assert all(keyword.isupper() for keyword in keywords)
    assert keywords[0] == "FROM"
    args = dict(instructions)
    # Exec forms are JSON arrays; the image's command is the one compose runs.
    assert json.loads(args["CMD"]) == compose["services"]["gateway"]["command"]
    assert args["EXPOSE"] == _arg(json.loads(args["CMD"]), "--port")
    healthcheck = args["HEALTHCHECK"]
    assert "--interval=" in healthcheck
    json.loads(healthcheck.partition(" CMD ")[2])
    # COPY sources exist in the build context (the repository root).
    for keyword, rest in instructions:
        if keyword == "COPY":
            *sources, _target = shlex.split(rest)
            for source in sources:
                assert (ROOT / source).exists(), source

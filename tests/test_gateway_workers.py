"""``llmrouter serve --workers N``: real supervisor and worker processes on one real port, in
front of the loopback OpenAI fake, with a real Redis where limits must hold across workers."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from llmrouter.errors import ConfigError
from llmrouter.server import GatewaySettings
from llmrouter.server.workers import resolve_workers, usable_cpus, worker_settings
from tests.conftest import RedisServer, free_port, stop_process, wait_ready
from tests.fakes.openai_fake import OpenAIFake

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


class Served:
    """``llmrouter serve --workers N`` as a child process; its stdout lines collected."""

    def __init__(self, url: str, workers: int, *args: str) -> None:
        self.port = free_port()
        self.lines: list[str] = []
        command = [sys.executable, "-m", "llmrouter", "serve", "--port", str(self.port)]
        command += ["--url", url, "--workers", str(workers), "--no-access-log", "--grace", "1"]
        self.proc = subprocess.Popen(
            [*command, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        wait_ready(self.proc, f"{self.base}/health", 20, "llmrouter serve", self.log)
        self.wait_line("listening on")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def log(self) -> str:
        return "".join(self.lines)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_line(self, text: str, count: int = 1, timeout: float = 10.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [line for line in self.lines if text in line]
            if len(found) >= count:
                return found
            time.sleep(0.02)
        raise AssertionError(f"no {count} x {text!r} in: {self.log()}")

    def pids(self) -> list[int]:
        first = self.wait_line("listening on")[0]
        pids = [int(p) for p in re.search(r"pids ([\d, ]+)", first).group(1).split(", ")]  # type: ignore[union-attr]
        for line in self.lines:
            m = re.search(r"\(pid (\d+)\) exited .* restarted as pid (\d+)", line)
            if m:
                pids[pids.index(int(m.group(1)))] = int(m.group(2))
        return pids

    def post(self, **kwargs: Any) -> httpx2.Response:
        # A fresh connection each time, so requests spread over the workers.
        return httpx2.post(f"{self.base}/v1/chat/completions", json=BODY, timeout=10, **kwargs)

    def close(self) -> None:
        if self.proc.poll() is None:
            stop_process(self.proc)


@pytest.fixture
def fake() -> Iterator[OpenAIFake]:
    with OpenAIFake(models=["m"]) as server:
        yield server


def test_four_workers_share_one_request_limit_through_redis(
    fake: OpenAIFake, redis_server: RedisServer
) -> None:
    state = f"{redis_server.url}?namespace=w{uuid.uuid4().hex[:8]}"
    served = Served(f"{fake.url}?model=m", 4, "--rpm", "6", "--state", state)
    try:
        assert len(set(served.pids())) == 4
        codes = [served.post().status_code for _ in range(20)]
    finally:
        served.close()
    assert codes.count(200) == 6 and codes.count(429) == 14, codes
    assert served.proc.returncode == 0


def test_a_killed_worker_is_replaced_and_no_request_is_lost(fake: OpenAIFake) -> None:
    served = Served(f"{fake.url}?model=m", 2)
    try:
        victim, survivor = served.pids()
        os.kill(victim, signal.SIGKILL)
        codes = [served.post().status_code for _ in range(20)]  # served while it restarts
        served.wait_line("restarted as pid")
        replacement = served.pids()[0]
        assert replacement not in (victim, survivor)
        os.kill(replacement, 0)  # alive
        codes += [served.post().status_code for _ in range(10)]
    finally:
        served.close()
    assert codes == [200] * 30
    assert served.proc.returncode == 0  # SIGTERM: drained and exited cleanly


def test_workers_that_keep_dying_make_the_supervisor_exit_nonzero(fake: OpenAIFake) -> None:
    served = Served(f"{fake.url}?model=m", 2)
    try:
        for deaths in range(1, 6):
            os.kill(served.pids()[0], signal.SIGKILL)
            if deaths < 5:
                served.wait_line("restarted as pid", deaths)
        assert served.proc.wait(15) == 1
        served.wait_line("giving up")
    finally:
        served.close()


def test_sigterm_drains_every_worker(fake: OpenAIFake) -> None:
    served = Served(f"{fake.url}?model=m", 2)
    pids = served.pids()
    assert served.post().status_code == 200
    served.proc.send_signal(signal.SIGTERM)
    assert served.proc.wait(15) == 0
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_limits_without_shared_state_are_divided_per_worker() -> None:
    settings = GatewaySettings(
        url="http://127.0.0.1:9/v1?model=m",
        requests_per_minute=10,
        tokens_per_minute=1000,
        max_in_flight_per_key=64,
        max_connections=1024,
    )
    alone = worker_settings(settings, 4, shared=False)
    assert (alone.requests_per_minute, alone.tokens_per_minute) == (3, 250)
    assert (alone.max_in_flight_per_key, alone.max_connections) == (16, 256)
    shared = worker_settings(settings, 4, shared=True)
    assert (shared.requests_per_minute, shared.tokens_per_minute) == (10, 1000)
    assert shared.max_in_flight_per_key == 16
    assert worker_settings(settings, 1, shared=False) is settings


def test_worker_count() -> None:
    assert resolve_workers("auto") == usable_cpus() <= len(os.sched_getaffinity(0))
    assert resolve_workers("3") == 3
    for bad in ("0", "many", 0):
        with pytest.raises(ConfigError, match="workers"):
            resolve_workers(bad)

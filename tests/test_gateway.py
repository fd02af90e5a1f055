"""``llmrouter serve``: real OpenAI SDK and curl clients, over loopback, through the gateway to
the real llama.cpp server (with fault proxies and closed ports where a test needs failures).

Each gateway runs in-process, in a thread with its own event loop (so the sync OpenAI SDK and
curl subprocesses can call it from the test's thread), on a free port.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import subprocess
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx2
import openai
import pytest
from aiohttp import web

from llmrouter.policy import CircuitBreaker, RetryPolicy
from llmrouter.server import GatewayRunner, GatewaySettings, KeyStore, create_app
from tests.conftest import PARIS
from tests.fakes.fault_proxy import Fault, FaultProxy

pytestmark = pytest.mark.llama_server

KEY = "sk-gateway-test-secret-0123"
AUTH = {"Authorization": f"Bearer {KEY}"}
# Bytes of a llama.cpp server's streamed PARIS answer that hold its headers and the events for
# the role, "The" and " capital" (every event is ~245 bytes; the whole answer ~2,500).
AFTER_CONTENT = 1100


class GatewayThread:
    """The gateway app on 127.0.0.1:<free port>, served from a thread with its own loop."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base(self) -> str:
        return self.url + "/v1"

    async def _start(self) -> None:
        self.runner = GatewayRunner(create_app(self.settings), shutdown_timeout=2.0)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.port = self.runner.addresses[0][1]

    def __enter__(self) -> GatewayThread:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    def stop(self) -> None:
        """Shut down gracefully (grace period, then cut streams); returns when done."""
        if self.runner is not None:
            runner, self.runner = self.runner, None
            asyncio.run_coroutine_threadsafe(runner.cleanup(), self.loop).result(30)

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def settings(url: str, **kwargs: Any) -> GatewaySettings:
    options = {"retry_policy": RetryPolicy.testing(), **kwargs.pop("client_options", {})}
    return GatewaySettings(url=url, client_options=options, **kwargs)


def pinned(url: str) -> str:
    return url + "?model=smollm2"


@pytest.fixture(scope="module")
def gateway(llama_server: str) -> Iterator[GatewayThread]:
    keys = KeyStore([("team-a", KEY)])
    with GatewayThread(settings(pinned(llama_server), keys=keys)) as gw:
        yield gw


@pytest.fixture
def proxy(llama_server: str) -> Iterator[FaultProxy]:
    port = urlsplit(llama_server).port
    assert port is not None
    with FaultProxy(port) as p:
        yield p


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def access_log() -> Iterator[Lines]:
    logger = logging.getLogger("llmrouter.access")
    handler = Lines()
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old)


def sse_events(text: str) -> list[str]:
    return [line[6:] for line in text.splitlines() if line.startswith("data: ")]


# -- the OpenAI SDK, sync and async, JSON and streaming -------------------------------------


def test_openai_sync_sdk_gets_paris(gateway: GatewayThread) -> None:
    client = openai.OpenAI(base_url=gateway.base, api_key=KEY, max_retries=0)
    resp = client.chat.completions.create(
        model="smollm2", messages=PARIS, max_tokens=16, temperature=0
    )
    assert "Paris" in (resp.choices[0].message.content or "")
    assert resp.usage is not None and resp.usage.completion_tokens > 0
    models = client.models.list()
    assert [m.id for m in models.data]
    client.close()


async def test_openai_async_sdk_gets_paris_json_and_stream(gateway: GatewayThread) -> None:
    async with openai.AsyncOpenAI(base_url=gateway.base, api_key=KEY, max_retries=0) as client:
        resp = await client.chat.completions.create(
            model="smollm2", messages=PARIS, max_tokens=16, temperature=0
        )
        assert "Paris" in (resp.choices[0].message.content or "")
        stream = await client.chat.completions.create(
            model="smollm2", messages=PARIS, max_tokens=16, temperature=0, stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert "Paris" in text


def test_openai_sync_sdk_streams(gateway: GatewayThread) -> None:
    with openai.OpenAI(base_url=gateway.base, api_key=KEY, max_retries=0) as client:
        stream = client.chat.completions.create(
            model="smollm2", messages=PARIS, max_tokens=16, temperature=0, stream=True
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert "Paris" in text


# -- curl -----------------------------------------------------------------------------------


def curl(*args: str, body: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("curl")
    assert exe is not None, "curl is needed (scripts/test.sh installs it)"
    data = ["--data-binary", "@-", "-H", "Content-Type: application/json"] if body else []
    return subprocess.run(
        [exe, "-sS", "--max-time", "30", *data, *args],
        input=json.dumps(body) if body else None,
        capture_output=True,
        text=True,
        timeout=40,
    )


def test_curl_json_and_sse(gateway: GatewayThread) -> None:
    body = {"model": "smollm2", "messages": PARIS, "max_tokens": 16, "temperature": 0}
    url = gateway.base + "/chat/completions"
    plain = curl("-H", f"Authorization: Bearer {KEY}", url, body=body)
    assert plain.returncode == 0, plain.stderr
    assert "Paris" in json.loads(plain.stdout)["choices"][0]["message"]["content"]

    streamed = curl(
        "-N", "-i", "-H", f"Authorization: Bearer {KEY}", url, body={**body, "stream": True}
    )
    assert streamed.returncode == 0, streamed.stderr
    assert "content-type: text/event-stream" in streamed.stdout.lower()
    events = sse_events(streamed.stdout)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert "Paris" in "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)


# -- authentication, limits, validation ---------------------------------------------------


def test_wrong_or_missing_key_is_401_without_echoing_it(gateway: GatewayThread) -> None:
    url = gateway.base + "/chat/completions"
    body = {"messages": PARIS}
    wrong = "sk-not-the-right-key-98765"
    for headers in ({"Authorization": f"Bearer {wrong}"}, {}, {"Authorization": KEY}):
        r = httpx2.post(url, json=body, headers=headers, timeout=10)
        assert r.status_code == 401
        error = r.json()["error"]
        assert error["type"] == "authentication_error"
        assert set(error) >= {"message", "type", "param", "code"}
        assert wrong not in r.text and KEY not in r.text
        assert r.headers["www-authenticate"].startswith("Bearer")
    sdk = openai.OpenAI(base_url=gateway.base, api_key=wrong, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        sdk.models.list()
    sdk.close()


def test_request_limit_answers_429_with_retry_after(llama_server: str) -> None:
    with GatewayThread(settings(pinned(llama_server), requests_per_minute=1)) as gw:
        url = gw.base + "/chat/completions"
        first = httpx2.post(url, json={"messages": [{"role": "x", "content": "hi"}]}, timeout=10)
        assert first.status_code == 400  # admitted (and counted), then rejected as invalid
        second = httpx2.post(url, json={"messages": PARIS}, timeout=10)
        assert second.status_code == 429
        assert 50 <= int(second.headers["retry-after"]) <= 60
        assert second.json()["error"]["type"] == "rate_limit_error"
        assert second.json()["error"]["code"] == "rate_limit_exceeded"
        metrics = httpx2.get(gw.url + "/metrics", timeout=10).text
        assert 'llmrouter_gateway_rate_limited_total{limit="requests"} 1' in metrics


def test_token_limit_charges_real_usage(llama_server: str) -> None:
    with GatewayThread(settings(pinned(llama_server), tokens_per_minute=20)) as gw:
        url = gw.base + "/chat/completions"
        body = {"messages": PARIS, "max_tokens": 4, "temperature": 0}
        assert httpx2.post(url, json=body, timeout=30).status_code == 200  # ~40 tokens used
        second = httpx2.post(url, json=body, timeout=30)
        assert second.status_code == 429
        assert int(second.headers["retry-after"]) > 60  # in debt: more than a minute's refill
        assert "tokens per minute" in second.json()["error"]["message"]


def test_body_over_the_limit_is_413(llama_server: str) -> None:
    with GatewayThread(settings(pinned(llama_server), max_body_bytes=4096)) as gw:
        url = gw.base + "/chat/completions"
        big = {"messages": [{"role": "user", "content": "x" * 10_000}]}
        r = httpx2.post(url, json=big, timeout=10)
        assert r.status_code == 413
        assert r.json()["error"]["code"] == "request_too_large"

        def chunked() -> Iterator[bytes]:  # no Content-Length: aiohttp's own limit applies
            yield json.dumps(big).encode()

        r = httpx2.post(url, content=chunked(), timeout=10)
        assert r.status_code == 413
        assert r.json()["error"]["type"] == "invalid_request_error"


def test_validation_errors_are_400_naming_the_field(gateway: GatewayThread) -> None:
    url = gateway.base + "/chat/completions"
    cases = [
        ({"messages": PARIS, "temperature": 7}, "temperature"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
        ({"model": "m"}, "messages"),
        ({"messages": PARIS, "stream": "yes"}, "stream"),
    ]
    for body, field in cases:
        r = httpx2.post(url, json=body, headers=AUTH, timeout=10)
        assert r.status_code == 400, body
        error = r.json()["error"]
        assert error["param"] == field
        assert field in error["message"]
        assert error["type"] == "invalid_request_error"
    r = httpx2.post(url, content=b'{"messages": [', headers=AUTH, timeout=10)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "body"
    assert "malformed JSON" in r.json()["error"]["message"]
    r = httpx2.get(gateway.base + "/completions", headers=AUTH, timeout=10)
    assert r.status_code == 404
    assert r.json()["error"]["message"] == "no such endpoint: GET /v1/completions"
    sdk = openai.OpenAI(base_url=gateway.base, api_key=KEY, max_retries=0)
    with pytest.raises(openai.BadRequestError, match="temperature"):
        sdk.chat.completions.create(model="m", messages=PARIS, temperature=9)  # type: ignore[arg-type]
    sdk.close()


# -- failover and upstream failures --------------------------------------------------------


def test_fails_over_past_a_closed_port_and_a_reset(
    llama_server: str, closed_url: str, proxy: FaultProxy, access_log: Lines
) -> None:
    proxy.script("reset", "reset")
    chain = f"{pinned(closed_url)}, {pinned(proxy.url)}, {pinned(llama_server)}"
    with GatewayThread(settings(chain)) as gw:
        with openai.OpenAI(base_url=gw.base, api_key="unused", max_retries=0) as client:
            resp = client.chat.completions.create(
                model="smollm2", messages=PARIS, max_tokens=16, temperature=0
            )
            assert "Paris" in (resp.choices[0].message.content or "")
            stream = client.chat.completions.create(
                model="smollm2", messages=PARIS, max_tokens=16, temperature=0, stream=True
            )
            text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            assert "Paris" in text
        metrics = httpx2.get(gw.url + "/metrics", timeout=10).text
    assert proxy.served == ["reset", "reset"]
    entries = [json.loads(line) for line in access_log.lines]
    assert [(e["status"], e["attempts"], e["backend"]) for e in entries] == [
        (200, 3, pinned(llama_server)),
        (200, 3, pinned(llama_server)),
    ]
    assert f'llmrouter_backend_failovers_total{{backend="{pinned(closed_url)}"}} 2' in metrics
    assert (
        f'llmrouter_backend_errors_total{{backend="{pinned(proxy.url)}",'
        'error="BackendConnectionError"} 2'
    ) in metrics


def test_every_backend_failing_is_502_with_the_attempt_report(closed_url: str) -> None:
    other = closed_url.replace("/v1", "/other/v1")
    with GatewayThread(settings(f"{pinned(closed_url)}, {pinned(other)}")) as gw:
        r = httpx2.post(gw.base + "/chat/completions", json={"messages": PARIS}, timeout=10)
    assert r.status_code == 502
    assert r.headers["x-should-retry"] == "false"
    error = r.json()["error"]
    assert error["type"] == "upstream_error"
    assert error["message"].startswith("all ")
    assert "BackendConnectionError" in error["message"]
    assert "Traceback" not in r.text
    assert [a["backend"] for a in error["attempts"]][:2] == [pinned(closed_url), pinned(other)]


def test_a_stalled_backend_is_504(proxy: FaultProxy) -> None:
    proxy.script("blackhole")
    url = pinned(proxy.url) + "&ttft_timeout=0.3&max_retries=0"
    with GatewayThread(settings(url)) as gw:
        r = httpx2.post(gw.base + "/chat/completions", json={"messages": PARIS}, timeout=10)
    assert r.status_code == 504
    assert r.json()["error"]["type"] == "timeout_error"
    assert "BackendTimeoutError" in r.json()["error"]["message"]


def test_ready_is_503_when_the_only_breaker_is_open(closed_url: str) -> None:
    options = {"circuit_breaker": lambda: CircuitBreaker(failure_threshold=1, cooldown=60)}
    with GatewayThread(settings(pinned(closed_url), client_options=options)) as gw:
        assert httpx2.get(gw.url + "/health", timeout=10).status_code == 200
        assert httpx2.get(gw.url + "/ready", timeout=10).status_code == 200
        r = httpx2.post(gw.base + "/chat/completions", json={"messages": PARIS}, timeout=10)
        assert r.status_code == 503  # its failure opened the breaker: nothing is usable now
        assert 50 <= int(r.headers["retry-after"]) <= 60
        ready = httpx2.get(gw.url + "/ready", timeout=10)
        assert ready.status_code == 503
        assert ready.json()["usable_backends"] == 0
        assert httpx2.get(gw.url + "/health", timeout=10).status_code == 200
        metrics = httpx2.get(gw.url + "/metrics", timeout=10).text
    assert f'llmrouter_backend_breaker_state{{backend="{pinned(closed_url)}"}} 2' in metrics


def test_ready_probe_checks_backends(llama_server: str, closed_url: str) -> None:
    with GatewayThread(settings(pinned(closed_url))) as gw:
        assert httpx2.get(gw.url + "/ready?probe=1", timeout=10).status_code == 503
    with GatewayThread(settings(f"{pinned(closed_url)}, {pinned(llama_server)}")) as gw:
        r = httpx2.get(gw.url + "/ready?probe=1", timeout=10)
        assert r.status_code == 200
        assert r.json()["usable_backends"] == 1


# -- streams that break -------------------------------------------------------------------


def test_a_cut_after_content_ends_the_stream_with_an_error_event(
    proxy: FaultProxy, llama_server: str
) -> None:
    proxy.script(Fault("reset_after", after=AFTER_CONTENT))
    chain = f"{pinned(proxy.url)}, {pinned(llama_server)}"
    body = {"messages": PARIS, "max_tokens": 16, "temperature": 0, "stream": True}
    with GatewayThread(settings(chain)) as gw:
        r = httpx2.post(gw.base + "/chat/completions", json=body, timeout=30)
        assert r.status_code == 200
        events = sse_events(r.text)
        assert events[-1] == "[DONE]"
        error = json.loads(events[-2])["error"]
        assert error["type"] == "stream_interrupted"
        assert "interrupted" in error["message"]
        content = [json.loads(e)["choices"][0]["delta"].get("content") for e in events[:-2]]
        assert "".join(c or "" for c in content).startswith("The")

        proxy.script(Fault("reset_after", after=AFTER_CONTENT))
        with openai.OpenAI(base_url=gw.base, api_key="unused", max_retries=0) as client:
            stream = client.chat.completions.create(
                model="smollm2", messages=PARIS, max_tokens=16, temperature=0, stream=True
            )
            with pytest.raises(openai.APIError, match="interrupted"):
                for _ in stream:
                    pass


def test_shutdown_cuts_a_stream_after_the_grace_period(proxy: FaultProxy) -> None:
    proxy.script(Fault("stall_after", after=AFTER_CONTENT))
    body = {"messages": PARIS, "max_tokens": 16, "temperature": 0, "stream": True}
    with GatewayThread(settings(pinned(proxy.url), grace_s=0.3)) as gw:
        url = gw.base + "/chat/completions"
        with httpx2.stream("POST", url, json=body, timeout=30) as r:
            lines = r.iter_lines()
            first = next(line for line in lines if line.startswith("data: "))
            assert json.loads(first[6:])["object"] == "chat.completion.chunk"
            gw.stop()  # the backend is stalled: the stream outlives the grace period
            events = [line[6:] for line in lines if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["error"]["code"] == "shutting_down"


def test_shutdown_lets_a_stream_finish_within_the_grace_period(proxy: FaultProxy) -> None:
    proxy.script(Fault("delay", seconds=0.3))
    body = {"messages": PARIS, "max_tokens": 16, "temperature": 0, "stream": True}
    result: dict[str, Any] = {}
    with GatewayThread(settings(pinned(proxy.url), grace_s=10)) as gw:

        def call() -> None:
            result["r"] = httpx2.post(gw.base + "/chat/completions", json=body, timeout=30)

        caller = threading.Thread(target=call)
        caller.start()
        while proxy.connections == 0:  # the request is in flight
            threading.Event().wait(0.01)
        gw.stop()
        caller.join(30)
    events = sse_events(result["r"].text)
    assert events[-1] == "[DONE]"
    assert all("error" not in json.loads(e) for e in events[:-1])
    assert "Paris" in "".join(
        json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1]
    )


# -- metrics and logs -----------------------------------------------------------------------


def test_metrics_after_traffic(gateway: GatewayThread, llama_server: str) -> None:
    body = {"messages": PARIS, "max_tokens": 8, "temperature": 0}
    url = gateway.base + "/chat/completions"
    assert httpx2.post(url, json=body, headers=AUTH, timeout=30).status_code == 200
    r = httpx2.post(url, json={**body, "stream": True}, headers=AUTH, timeout=30)
    assert r.status_code == 200
    metrics = httpx2.get(gateway.url + "/metrics", timeout=10)
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = metrics.text
    backend = pinned(llama_server)
    for needle in (
        "# TYPE llmrouter_gateway_requests_total counter",
        'llmrouter_gateway_requests_total{path="/v1/chat/completions",status="200"}',
        "# TYPE llmrouter_gateway_request_duration_seconds histogram",
        'llmrouter_gateway_request_duration_seconds_bucket{path="/v1/chat/completions",le="+Inf"}',
        f'llmrouter_gateway_time_to_first_token_seconds_count{{backend="{backend}"}}',
        f'llmrouter_gateway_tokens_total{{backend="{backend}",direction="in"}}',
        f'llmrouter_gateway_tokens_total{{backend="{backend}",direction="out"}}',
        f'llmrouter_backend_attempts_total{{backend="{backend}"}}',
        f'llmrouter_backend_attempt_duration_seconds_count{{backend="{backend}"}}',
        f'llmrouter_backend_breaker_state{{backend="{backend}"}} 0',
        "llmrouter_gateway_in_flight_requests 0",
    ):
        assert needle in text, needle
    assert KEY not in text


def test_access_log_lines_are_json_without_content(
    gateway: GatewayThread, access_log: Lines
) -> None:
    body = {"messages": PARIS, "max_tokens": 8, "temperature": 0}
    url = gateway.base + "/chat/completions"
    httpx2.post(url, json=body, headers=AUTH, timeout=30)
    httpx2.post(url, json={**body, "stream": True}, headers=AUTH, timeout=30)
    httpx2.post(url, json=body, headers={"Authorization": "Bearer sk-wrong"}, timeout=30)
    entries = [json.loads(line) for line in access_log.lines]
    assert [(e["status"], e["key_id"], e["stream"]) for e in entries] == [
        (200, "team-a", False),
        (200, "team-a", True),
        (401, None, None),
    ]
    ok = entries[0]
    assert ok["prompt_tokens"] > 10 and ok["completion_tokens"] > 0
    assert ok["latency_ms"] > 0 and ok["backend"]
    assert entries[1]["ttft_ms"] is not None
    assert entries[2]["error"] == "AuthenticationFailed"
    for line in access_log.lines:
        assert "France" not in line and "Paris" not in line
        assert KEY not in line and "sk-wrong" not in line


def test_log_content_adds_messages_and_answer(llama_server: str, access_log: Lines) -> None:
    with GatewayThread(settings(pinned(llama_server), log_content=True)) as gw:
        body = {"messages": PARIS, "max_tokens": 16, "temperature": 0}
        httpx2.post(gw.base + "/chat/completions", json=body, timeout=30)
    entry = json.loads(access_log.lines[-1])
    assert entry["messages"] == PARIS
    assert "Paris" in entry["response"]

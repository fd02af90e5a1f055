"""``llmrouter serve --otel``: the caller's ``traceparent`` runs through the gateway to the backend.

In process (the app on a thread, the process's global providers collecting in memory): the
caller's trace context is the parent of the gateway's SERVER span, the client's request and
attempt spans sit under it, and the loopback backend receives the attempt span's
``traceparent``; plain and streamed (passed through), with a failover. As a real process with
``OTEL_TRACES_EXPORTER=console``: the SDK is set up from the ``OTEL_*`` variables in each
worker and the spans come out on stdout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from llmrouter.errors import ConfigError
from llmrouter.policy import RetryPolicy
from llmrouter.server import GatewaySettings
from llmrouter.server.tracing import _metric_exporter, _span_exporter
from tests.conftest import free_port, stop_process, wait_ready
from tests.fakes.openai_fake import Error, OpenAIFake, Stream, sse
from tests.test_gateway import GatewayThread

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
BODY = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}


def _collector() -> InMemorySpanExporter:
    """An in-memory exporter on the process's global tracer provider (set once per process)."""
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    if not isinstance(metrics.get_meter_provider(), MeterProvider):
        metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
    return exporter


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    return _collector()


@pytest.fixture
def spans(exporter: InMemorySpanExporter) -> Iterator[InMemorySpanExporter]:
    exporter.clear()
    yield exporter
    exporter.clear()


@pytest.fixture
def fake() -> Iterator[OpenAIFake]:
    with OpenAIFake() as server:
        yield server


def otel_settings(url: str, **kwargs: Any) -> GatewaySettings:
    options = {"retry_policy": RetryPolicy.testing(max_retries=0)}
    return GatewaySettings(url=url, otel=True, client_options=options, **kwargs)


def by_name(spans: list[ReadableSpan], prefix: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name.startswith(prefix)]


def check_chain(finished: list[ReadableSpan], attempts: int) -> list[ReadableSpan]:
    """The server span under the caller's, the request span under it, attempts under that."""
    (server,) = [s for s in finished if s.kind is SpanKind.SERVER]
    assert server.name == "POST /v1/chat/completions"
    assert server.context.trace_id == int(TRACE_ID, 16)
    assert server.parent is not None and server.parent.span_id == int(PARENT_ID, 16)
    assert server.parent.is_remote
    assert (server.attributes or {})["http.response.status_code"] == 200
    (request,) = [s for s in finished if s.name == "chat fake-model"]
    assert request.parent is not None and request.parent.span_id == server.context.span_id
    tries = sorted(by_name(finished, "chat fake-model attempt"), key=lambda s: s.name)
    assert len(tries) == attempts
    for t in tries:
        assert t.parent is not None and t.parent.span_id == request.context.span_id
        assert t.context.trace_id == int(TRACE_ID, 16)
    return [server, request, *tries]


def sent_traceparent(span: ReadableSpan) -> str:
    return f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}"


def test_traceparent_runs_caller_gateway_attempt_backend(
    spans: InMemorySpanExporter, fake: OpenAIFake
) -> None:
    with OpenAIFake() as failing:
        failing.script(Error(503, {"error": {"message": "overloaded"}}))
        with GatewayThread(otel_settings(f"{failing.url}, {fake.url}")) as gw:
            r = httpx2.post(
                f"{gw.base}/chat/completions",
                json=BODY,
                headers={"traceparent": TRACEPARENT},
                timeout=10,
            )
        assert r.status_code == 200, r.text
        _, request, first, second = check_chain(list(spans.get_finished_spans()), attempts=2)
        assert failing.chat_requests[0].headers["traceparent"].startswith(sent_traceparent(first))
    assert fake.chat_requests[0].headers["traceparent"].startswith(sent_traceparent(second))
    assert (first.attributes or {})["llmrouter.failover.reason"] == "ServerError 503"
    assert (request.attributes or {})["gen_ai.usage.input_tokens"] == 12


def test_a_streamed_answer_passed_through_ends_its_spans_with_usage(
    spans: InMemorySpanExporter, fake: OpenAIFake
) -> None:
    fake.script(Stream(sse("Hel", "lo", " there", usage=True)))
    with GatewayThread(otel_settings(fake.url)) as gw:
        r = httpx2.post(
            f"{gw.base}/chat/completions",
            json={**BODY, "stream": True},
            headers={"traceparent": TRACEPARENT},
            timeout=10,
        )
    assert r.status_code == 200 and "[DONE]" in r.text
    _, request, attempt = check_chain(list(spans.get_finished_spans()), attempts=1)
    attrs = request.attributes or {}
    assert attrs["gen_ai.request.stream"] is True
    assert attrs["gen_ai.usage.output_tokens"] == 3
    assert "gen_ai.response.time_to_first_chunk" in attrs
    assert fake.chat_requests[0].headers["traceparent"].startswith(sent_traceparent(attempt))


def test_without_a_traceparent_the_gateway_starts_the_trace(
    spans: InMemorySpanExporter, fake: OpenAIFake
) -> None:
    with GatewayThread(otel_settings(fake.url)) as gw:
        assert httpx2.get(f"{gw.url}/health", timeout=5).status_code == 200
        r = httpx2.post(f"{gw.base}/chat/completions", json=BODY, timeout=10)
    assert r.status_code == 200
    finished = list(spans.get_finished_spans())
    (server,) = [s for s in finished if s.kind is SpanKind.SERVER]  # /health is not traced
    assert server.parent is None
    (attempt,) = by_name(finished, "chat fake-model attempt")
    assert attempt.context.trace_id == server.context.trace_id
    assert fake.chat_requests[0].headers["traceparent"].startswith(sent_traceparent(attempt))


def test_without_otel_nothing_is_traced_or_passed_on(
    spans: InMemorySpanExporter, fake: OpenAIFake
) -> None:
    with GatewayThread(GatewaySettings(url=fake.url)) as gw:
        r = httpx2.post(
            f"{gw.base}/chat/completions",
            json=BODY,
            headers={"traceparent": TRACEPARENT},
            timeout=10,
        )
    assert r.status_code == 200
    assert list(spans.get_finished_spans()) == []
    assert "traceparent" not in fake.chat_requests[0].headers


def test_unknown_exporters_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="OTEL_TRACES_EXPORTER"):
        _span_exporter("zipkin-ish")
    with pytest.raises(ConfigError, match="OTEL_METRICS_EXPORTER"):
        _metric_exporter("nope")


def test_serve_otel_sets_up_the_sdk_from_the_otel_variables(fake: OpenAIFake) -> None:
    port = free_port()
    env = {
        **os.environ,
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_SERVICE_NAME": "gateway-under-test",
    }
    command = [sys.executable, "-m", "llmrouter", "serve", "--port", str(port), "--otel"]
    command += ["--url", fake.url, "--workers", "2", "--no-access-log", "--grace", "1"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        wait_ready(proc, f"http://127.0.0.1:{port}/health", 20, "llmrouter serve", lambda: "")
        r = httpx2.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json=BODY,
            headers={"traceparent": TRACEPARENT},
            timeout=10,
        )
        assert r.status_code == 200, r.text
    finally:
        stop_process(proc)  # the worker flushes its batched spans on shutdown
    out = proc.stdout.read().decode() if proc.stdout is not None else ""
    assert fake.chat_requests[0].headers["traceparent"].startswith(f"00-{TRACE_ID}-")
    assert f'"trace_id": "0x{TRACE_ID}"' in out, out[-3000:]
    assert '"service.name": "gateway-under-test"' in out
    names = [json.loads(line)["name"] for line in _span_objects(out)]
    assert {"POST /v1/chat/completions", "chat fake-model", "chat fake-model attempt 1"} <= set(
        names
    ), names


def _span_objects(out: str) -> list[str]:
    """The console exporter's JSON objects (one per span, indented over several lines)."""
    objects, depth, current = [], 0, []
    for line in out.splitlines():
        if depth == 0 and line.startswith("{"):
            current = []
        if depth or line.startswith("{"):
            current.append(line)
            depth += line.count("{") - line.count("}")
            if depth == 0:
                objects.append("\n".join(current))
    return objects

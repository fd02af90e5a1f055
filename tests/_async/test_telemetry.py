"""OpenTelemetry (``telemetry=``): spans and metrics from real requests over real sockets.

The SDK's in-memory exporter and metric reader collect what :class:`llmrouter.otel.Telemetry`
makes: a request span with a child span per attempt (a failover shows two), streams ending
their span when they end, GenAI attributes and metrics, the attempt's ``traceparent`` on the
backend's request, no message content by default and never a key.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from llmrouter import AsyncClient, BadRequestError
from llmrouter.otel import Telemetry
from llmrouter.policy import RetryPolicy
from tests.fakes.openai_fake import Error, OpenAIFake, Stream, sse

MESSAGES = [{"role": "user", "content": "the secret recipe is 42"}]
NO_RETRY = RetryPolicy.testing(max_retries=0)
KEY = "sk-telemetry-test-key-0123456789"


class Collected:
    """A Telemetry over in-memory providers, and what they collected."""

    def __init__(self, *, capture_content: bool = False) -> None:
        self.spans = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        meter_provider = MeterProvider(metric_readers=[self.reader])
        self.telemetry = Telemetry(
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
            capture_content=capture_content,
        )

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def request_span(self) -> ReadableSpan:
        spans = [s for s in self.finished() if s.parent is None]
        assert len(spans) == 1, [s.name for s in self.finished()]
        return spans[0]

    def attempts(self) -> list[ReadableSpan]:
        root = self.request_span()
        children = [s for s in self.finished() if s.parent is not None]
        assert all(
            s.parent is not None and s.parent.span_id == root.context.span_id for s in children
        )
        return sorted(children, key=lambda s: int(s.attributes["llmrouter.attempt"]))  # type: ignore[arg-type,index]

    def metrics(self) -> dict[str, list[Any]]:
        data = self.reader.get_metrics_data()
        found: dict[str, list[Any]] = {}
        assert data is not None
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    found.setdefault(metric.name, []).extend(metric.data.data_points)
        return found

    def everything_said(self) -> str:
        """Every span name, attribute and event, and every metric attribute, as text."""
        parts: list[str] = []
        for span in self.finished():
            parts.append(span.name)
            parts.append(repr(dict(span.attributes or {})))
            parts.append(repr(span.status.description))
            for event in span.events:
                parts.append(event.name + repr(dict(event.attributes or {})))
        for points in self.metrics().values():
            parts.extend(repr(dict(p.attributes)) for p in points)
        return "\n".join(parts)


@pytest.fixture
def otel() -> Collected:
    return Collected()


@pytest.fixture
def fake() -> Iterator[OpenAIFake]:
    with OpenAIFake() as server:
        yield server


@pytest.fixture
def fake2() -> Iterator[OpenAIFake]:
    with OpenAIFake() as server:
        yield server


def _traceparent_of(span: ReadableSpan) -> str:
    context = span.context
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


async def test_a_failover_is_two_attempt_spans_under_one_request_span(
    otel: Collected, fake: OpenAIFake, fake2: OpenAIFake
) -> None:
    fake.script(Error(500, {"error": {"message": "engine down"}}))
    async with AsyncClient(
        f"{fake.url}, {fake2.url}", retry_policy=NO_RETRY, telemetry=otel.telemetry
    ) as client:
        resp = await client.chat.completions.create(
            messages=MESSAGES, model="fake-model", max_tokens=8, temperature=0.5
        )
    assert resp.choices[0].message.content == "Hello!"
    root = otel.request_span()
    assert root.name == "chat fake-model" and root.kind is SpanKind.CLIENT
    attrs = root.attributes or {}
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] == "fake-model"
    assert attrs["gen_ai.request.max_tokens"] == 8
    assert attrs["gen_ai.request.temperature"] == 0.5
    assert attrs["gen_ai.response.model"] == "fake-model"
    assert attrs["gen_ai.response.id"] == "chatcmpl-fake"
    assert attrs["gen_ai.usage.input_tokens"] == 12
    assert attrs["gen_ai.usage.output_tokens"] == 3
    assert tuple(attrs["gen_ai.response.finish_reasons"]) == ("stop",)  # type: ignore[arg-type]
    assert attrs["gen_ai.system"] == "_OTHER"  # a plain http:// server could be anything
    assert attrs["llmrouter.backend"] == fake2.url
    assert attrs["llmrouter.attempts"] == 2
    assert root.status.status_code is not StatusCode.ERROR

    first, second = otel.attempts()
    assert first.name == "chat fake-model attempt 1"
    a1, a2 = first.attributes or {}, second.attributes or {}
    assert a1["llmrouter.backend"] == fake.url and a2["llmrouter.backend"] == fake2.url
    assert a1["llmrouter.attempt.outcome"] == "failover"
    assert a1["llmrouter.failover.reason"] == "ServerError 500"
    assert a1["error.type"] == "ServerError" and a1["http.response.status_code"] == 500
    assert a1["llmrouter.breaker.state"] == "closed"
    assert first.status.status_code is StatusCode.ERROR
    assert a2["llmrouter.attempt.outcome"] == "success"
    assert a2["gen_ai.response.model"] == "fake-model"
    assert "gen_ai.usage.input_tokens" not in a2  # counted once, on the request span
    assert first.end_time is not None and second.start_time is not None
    assert first.end_time <= second.start_time

    # Each backend's request carried its own attempt's trace context.
    assert fake.chat_requests[0].headers["traceparent"] == _traceparent_of(first)
    assert fake2.chat_requests[0].headers["traceparent"] == _traceparent_of(second)

    points = otel.metrics()
    (duration,) = points["gen_ai.client.operation.duration"]
    assert duration.count == 1 and duration.attributes["gen_ai.response.model"] == "fake-model"
    tokens = {p.attributes["gen_ai.token.type"]: p.sum for p in points["gen_ai.client.token.usage"]}
    assert tokens == {"input": 12, "output": 3}


async def test_connection_refused_then_a_working_backend(
    otel: Collected, closed_url: str, fake: OpenAIFake
) -> None:
    async with AsyncClient(
        f"{closed_url}, {fake.url}", retry_policy=NO_RETRY, telemetry=otel.telemetry
    ) as client:
        await client.chat.completions.create(messages=MESSAGES, model="fake-model")
    first, second = otel.attempts()
    assert (first.attributes or {})["llmrouter.failover.reason"] == "BackendConnectionError"
    assert (second.attributes or {})["llmrouter.attempt.outcome"] == "success"


async def test_a_stream_span_ends_when_the_stream_ends(otel: Collected, fake: OpenAIFake) -> None:
    fake.script(Stream(sse("Hel", "lo", usage=True)))
    async with AsyncClient(fake.url, retry_policy=NO_RETRY, telemetry=otel.telemetry) as client:
        stream = await client.chat.completions.create(
            messages=MESSAGES, model="fake-model", stream=True
        )
        async with stream:
            first = await stream.__anext__()
            assert first is not None
            assert otel.finished() == []  # the request is still being answered
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text  # the rest of the answer
    root = otel.request_span()
    attrs = root.attributes or {}
    assert attrs["gen_ai.request.stream"] is True
    assert attrs["gen_ai.usage.output_tokens"] == 3
    assert tuple(attrs["gen_ai.response.finish_reasons"]) == ("stop",)  # type: ignore[arg-type]
    ttft = attrs["gen_ai.response.time_to_first_chunk"]
    assert isinstance(ttft, float) and ttft >= 0
    (attempt,) = otel.attempts()
    assert (attempt.attributes or {})["llmrouter.attempt.outcome"] == "success"
    points = otel.metrics()
    assert points["gen_ai.client.operation.time_to_first_chunk"][0].count == 1
    assert points["gen_ai.client.operation.duration"][0].count == 1


async def test_a_stream_closed_early_ends_its_span(otel: Collected, fake: OpenAIFake) -> None:
    fake.script(Stream(sse("a", "b", "c")))
    async with AsyncClient(fake.url, retry_policy=NO_RETRY, telemetry=otel.telemetry) as client:
        stream = await client.chat.completions.create(
            messages=MESSAGES, model="fake-model", stream=True
        )
        async with stream:
            await stream.__anext__()
    assert otel.request_span().end_time is not None


async def test_a_request_error_is_an_error_span_with_one_attempt(
    otel: Collected, fake: OpenAIFake, fake2: OpenAIFake
) -> None:
    fake.script(Error(400, {"error": {"message": "bad: the secret recipe is 42"}}))
    async with AsyncClient(
        f"{fake.url}, {fake2.url}", retry_policy=NO_RETRY, telemetry=otel.telemetry
    ) as client:
        with pytest.raises(BadRequestError):
            await client.chat.completions.create(messages=MESSAGES, model="fake-model")
    root = otel.request_span()
    assert root.status.status_code is StatusCode.ERROR
    assert (root.attributes or {})["error.type"] == "BadRequestError"
    (attempt,) = otel.attempts()
    assert (attempt.attributes or {})["llmrouter.attempt.outcome"] == "give_up"
    (duration,) = otel.metrics()["gen_ai.client.operation.duration"]
    assert duration.attributes["error.type"] == "BadRequestError"
    assert "secret recipe" not in otel.everything_said()  # the server's text is not recorded


async def test_no_content_by_default_and_never_a_key(
    otel: Collected, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TELEMETRY_TEST_KEY", KEY)
    with OpenAIFake(api_key=KEY) as server:
        url = f"{server.url}?api_key_env=TELEMETRY_TEST_KEY"
        async with AsyncClient(url, retry_policy=NO_RETRY, telemetry=otel.telemetry) as client:
            await client.chat.completions.create(messages=MESSAGES, model="fake-model")
            stream = await client.chat.completions.create(
                messages=MESSAGES, model="fake-model", stream=True
            )
            async with stream:
                async for _ in stream:
                    pass
    said = otel.everything_said()
    assert "secret recipe" not in said and "Hello" not in said
    assert "gen_ai.input.messages" not in said
    assert KEY not in said
    assert len([s for s in otel.finished() if s.parent is None]) == 2


async def test_content_when_asked_and_still_never_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    otel = Collected(capture_content=True)
    monkeypatch.setenv("TELEMETRY_TEST_KEY", KEY)
    with OpenAIFake(api_key=KEY) as server:
        url = f"{server.url}?api_key_env=TELEMETRY_TEST_KEY"
        async with AsyncClient(url, retry_policy=NO_RETRY, telemetry=otel.telemetry) as client:
            await client.chat.completions.create(messages=MESSAGES, model="fake-model")
    attrs = otel.request_span().attributes or {}
    assert "the secret recipe is 42" in str(attrs["gen_ai.input.messages"])
    assert "Hello!" in str(attrs["gen_ai.output.messages"])
    assert KEY not in otel.everything_said()


async def test_the_request_span_is_a_child_of_the_current_span(
    otel: Collected, fake: OpenAIFake
) -> None:
    tracer = otel.telemetry._tracer
    async with AsyncClient(fake.url, retry_policy=NO_RETRY, telemetry=otel.telemetry) as client:
        with tracer.start_as_current_span("handler") as outer:
            await client.chat.completions.create(messages=MESSAGES, model="fake-model")
    request = next(s for s in otel.finished() if s.name == "chat fake-model")
    assert request.parent is not None
    assert request.parent.span_id == outer.get_span_context().span_id


async def test_telemetry_off_sends_no_traceparent(fake: OpenAIFake) -> None:
    async with AsyncClient(fake.url, retry_policy=NO_RETRY, telemetry=False) as client:
        await client.chat.completions.create(messages=MESSAGES, model="fake-model")
    assert "traceparent" not in fake.chat_requests[0].headers

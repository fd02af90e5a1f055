"""OpenTelemetry spans and metrics for llmrouter's requests, built from its events alone.

Opt-in (``pip install 'llmrouter[otel]'``), and imported only when it is turned on::

    client = llmrouter.Client(url, telemetry=True)          # the global providers
    client = llmrouter.Client(url, telemetry=Telemetry(tracer_provider=tp, meter_provider=mp))
    # or LLMROUTER_OTEL=1 for every client that does not say; `llmrouter serve --otel`

:class:`Telemetry` is an event subscriber (:mod:`llmrouter.events`): the router knows nothing of
it, and with telemetry off nothing here runs. Per request it makes

* one CLIENT span ``chat <model>`` (GenAI semantic conventions: ``gen_ai.operation.name``,
  ``gen_ai.system`` / ``gen_ai.provider.name``, ``gen_ai.request.*``, ``gen_ai.response.model``,
  ``gen_ai.response.id``, ``gen_ai.response.finish_reasons``, ``gen_ai.usage.input_tokens`` /
  ``output_tokens``, ``gen_ai.response.time_to_first_chunk`` for streams), the child of
  whatever span is current when the request starts; for a stream it ends when the stream ends
  or is closed;
* one CLIENT child span per attempt, ``chat <model> attempt <n>``: ``llmrouter.backend`` (the
  display name: secrets removed), ``llmrouter.attempt``, ``llmrouter.breaker.state``,
  ``llmrouter.attempt.outcome`` (``success``, ``failover``, ``give_up``, ``skipped``,
  ``hedge_lost``, ``abandoned``), ``llmrouter.failover.reason``, ``error.type``. Its W3C trace
  context goes out with the attempt's HTTP request (``traceparent``, through the request's
  extra headers), so a traced backend continues the trace. Token usage is on the request span
  only, so that tools summing ``gen_ai.usage.*`` over a trace count it once.

Metrics (histograms, the conventions' bucket boundaries): ``gen_ai.client.operation.duration``
(s), ``gen_ai.client.operation.time_to_first_chunk`` (s, streams) and
``gen_ai.client.token.usage`` (tokens, ``gen_ai.token.type`` input / output).

No message content is recorded unless ``capture_content=True`` (or
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``, the GenAI instrumentations'
variable): then ``gen_ai.input.messages`` and ``gen_ai.output.messages`` hold the messages as
OpenAI-shaped JSON. Errors are named by class and status code, never by their text (a server's
error text may quote the prompt). Nothing here reads a key or a header.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import metrics, propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from llmrouter._accumulate import ChunkAccumulator
from llmrouter.events import Event

__all__ = ["CAPTURE_CONTENT_ENV", "Telemetry", "gen_ai_system"]

logger = logging.getLogger("llmrouter")

CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"

# The GenAI conventions' well-known systems; other engines are named by their scheme, and a
# plain OpenAI-compatible URL (http://, https://), which could be any server, is "_OTHER".
_SYSTEMS = {
    "openai": "openai",
    "azure": "azure.ai.openai",
    "anthropic": "anthropic",
    "bedrock": "aws.bedrock",
    "sagemaker": "aws.sagemaker",
    "gemini": "gcp.gemini",
    "gemini-openai": "gcp.gemini",
    "vertex": "gcp.vertex_ai",
    "groq": "groq",
    "deepseek": "deepseek",
    "mistral": "mistral_ai",
    "perplexity": "perplexity",
    "xai": "x_ai",
    "local": "llamacpp",
    "vllm+local": "vllm",
    "http": "_OTHER",
    "https": "_OTHER",
    "function": "_OTHER",
}

# Request parameters recorded as gen_ai.request.* (name in the body -> attribute).
_PARAMS = {
    "max_tokens": "gen_ai.request.max_tokens",
    "max_completion_tokens": "gen_ai.request.max_tokens",
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "frequency_penalty": "gen_ai.request.frequency_penalty",
    "presence_penalty": "gen_ai.request.presence_penalty",
    "seed": "gen_ai.request.seed",
    "n": "gen_ai.request.choice_count",
}

_DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48)
_TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)

# Requests whose end never came (a stream dropped without being closed): the oldest are ended
# past this many, so that a long-running process cannot grow without bound.
_MAX_OPEN = 65536


def _version() -> str:
    try:
        return importlib.metadata.version("llmrouter")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree
        return "0"


def gen_ai_system(scheme: str) -> str:
    """The ``gen_ai.system`` value for a backend URL scheme."""
    return _SYSTEMS.get(scheme, scheme or "_OTHER")


def _reason(error: BaseException | None) -> str:
    """An error named for telemetry: its class, and its status code when it has one."""
    if error is None:
        return ""
    status = getattr(error, "status_code", None)
    name = type(error).__name__
    return f"{name} {status}" if isinstance(status, int) else name


def _content_from_env() -> bool:
    return os.environ.get(CAPTURE_CONTENT_ENV, "").strip().lower() in ("1", "true", "yes")


@dataclass(eq=False)
class _Attempt:
    span: Span
    started_ns: int
    outcome: str = ""
    ended_ns: int = 0  # a failure waits here for the decision (failover, give up) that follows


@dataclass(eq=False)
class _Request:
    span: Span
    model: str
    stream: bool
    system: str = "_OTHER"
    backend: str = ""  # the one that served
    response_model: str = ""
    attempts: dict[int, _Attempt] = field(default_factory=dict)
    failed: _Attempt | None = None


class Telemetry:
    """Turns a client's events into OpenTelemetry spans and metrics.

    Args:
        tracer_provider: where spans go (default: the global one).
        meter_provider: where metrics go (default: the global one).
        capture_content: record the messages and answers on the request span (default:
            ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``, else off).
        propagate: send each attempt's trace context (``traceparent``) with its HTTP request.

    One instance may serve several clients. :meth:`on_event` never raises.
    """

    def __init__(
        self,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        capture_content: bool | None = None,
        propagate: bool = True,
    ) -> None:
        self.capture_content = _content_from_env() if capture_content is None else capture_content
        self.propagate = propagate
        self._tracer = trace.get_tracer("llmrouter", _version(), tracer_provider=tracer_provider)
        meter = metrics.get_meter("llmrouter", _version(), meter_provider=meter_provider)
        self._duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self._ttft = meter.create_histogram(
            "gen_ai.client.operation.time_to_first_chunk",
            unit="s",
            description="Time to receive the first chunk of a streamed response",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self._tokens = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used",
            explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS,
        )
        self._requests: dict[int, _Request] = {}
        self._lock = threading.Lock()

    def on_event(self, event: Event) -> None:
        """The client's event hook."""
        if not event.request_id:
            return
        try:
            handler = _HANDLERS.get(event.kind)
            if handler is not None:
                handler(self, event)
        except Exception:  # telemetry must never break a request
            logger.debug("telemetry: %s event not recorded", event.kind, exc_info=True)

    # -- requests -------------------------------------------------------------------------

    def _request(self, event: Event) -> _Request | None:
        """The request the event belongs to, its span started at its first event."""
        state = self._requests.get(event.request_id)
        if state is not None or event.request is None:
            return state
        request = event.request
        spec = event.spec
        model = request.model or (spec.model if spec is not None else None) or ""
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.stream": request.stream,
        }
        if model:
            attributes["gen_ai.request.model"] = model
        for param, name in _PARAMS.items():
            value = request.params.get(param)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                attributes[name] = value
        stop = request.params.get("stop")
        if isinstance(stop, str):
            attributes["gen_ai.request.stop_sequences"] = [stop]
        elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
            attributes["gen_ai.request.stop_sequences"] = stop
        if self.capture_content:
            attributes["gen_ai.input.messages"] = json.dumps(request.messages, default=str)
        start = time.time_ns() - int(max(event.elapsed_s, 0.0) * 1e9)
        span = self._tracer.start_span(
            f"chat {model}" if model else "chat",
            kind=SpanKind.CLIENT,
            attributes=attributes,
            start_time=start,
        )
        state = _Request(span, model, request.stream)
        with self._lock:
            self._requests[event.request_id] = state
            if len(self._requests) > _MAX_OPEN:
                lost = next(iter(self._requests))
                self._end_request(self._requests.pop(lost), 0.0, "lost")
        return state

    def _end_request(self, state: _Request, elapsed_s: float, error_type: str) -> None:
        self._settle(state, "give_up" if error_type else "success")
        span = state.span
        attributes = self._metric_attributes(state)
        if error_type:
            span.set_attribute("error.type", error_type)
            span.set_status(Status(StatusCode.ERROR, error_type))
            attributes["error.type"] = error_type
        self._duration.record(elapsed_s, attributes)
        span.end()

    def _metric_attributes(self, state: _Request) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.system": state.system,
        }
        if state.model:
            attributes["gen_ai.request.model"] = state.model
        if state.response_model:
            attributes["gen_ai.response.model"] = state.response_model
        if state.backend:
            attributes["llmrouter.backend"] = state.backend
        return attributes

    # -- attempts -------------------------------------------------------------------------

    def _settle(self, state: _Request, outcome: str) -> None:
        """End the failed attempt waiting for its decision: ``outcome`` is that decision."""
        failed = state.failed
        if failed is None:
            return
        state.failed = None
        failed.span.set_attribute("llmrouter.attempt.outcome", failed.outcome or outcome)
        failed.span.end(end_time=failed.ended_ns)

    def _end_attempt(self, state: _Request, number: int, outcome: str, model: str = "") -> None:
        attempt = state.attempts.pop(number, None)
        if attempt is not None:
            if model:
                attempt.span.set_attributes(
                    {"llmrouter.attempt.outcome": outcome, "gen_ai.response.model": model}
                )
            else:
                attempt.span.set_attribute("llmrouter.attempt.outcome", outcome)
            attempt.span.end()

    def _attempt_start(self, event: Event) -> None:
        state = self._request(event)
        if state is None:
            return
        self._settle(state, "failover")
        spec = event.spec
        system = gen_ai_system(spec.scheme) if spec is not None else "_OTHER"
        model = (spec.model if spec is not None else None) or state.model
        if not state.model and model:  # named by the backend's pinned model
            state.model = model
            state.span.update_name(f"chat {model}")
            state.span.set_attribute("gen_ai.request.model", model)
        state.system = system
        attributes: dict[str, Any] = {
            "gen_ai.system": system,
            "gen_ai.provider.name": system,
            "llmrouter.backend": event.backend,
            "llmrouter.attempt": event.attempt,
        }
        if model:
            attributes["gen_ai.request.model"] = model
        if event.breaker:
            attributes["llmrouter.breaker.state"] = event.breaker
        context = trace.set_span_in_context(state.span)
        span = self._tracer.start_span(
            f"chat {model} attempt {event.attempt}" if model else f"chat attempt {event.attempt}",
            context=context,
            kind=SpanKind.CLIENT,
            attributes=attributes,
        )
        state.attempts[event.attempt] = _Attempt(span, time.monotonic_ns())
        if self.propagate and event.request is not None:
            # The attempt's trace context rides with its HTTP request (every HTTP codec sends
            # the request's extra headers; in-process engines ignore them).
            propagate.inject(event.request.extra_headers, context=trace.set_span_in_context(span))

    def _failure(self, event: Event) -> None:
        state = self._requests.get(event.request_id)
        if state is None:
            return
        attempt = state.attempts.pop(event.attempt, None)
        if attempt is None:
            return
        self._settle(state, "failover")
        error_type = type(event.error).__name__ if event.error is not None else "_OTHER"
        span = attempt.span
        span.set_attribute("error.type", error_type)
        status = getattr(event.error, "status_code", None)
        if isinstance(status, int):
            span.set_attribute("http.response.status_code", status)
        span.set_status(Status(StatusCode.ERROR, error_type))
        attempt.ended_ns = time.time_ns()
        state.failed = attempt

    def _failover(self, event: Event) -> None:
        state = self._requests.get(event.request_id)
        if state is None or state.failed is None:
            return
        state.failed.outcome = "failover"
        state.failed.span.set_attribute("llmrouter.failover.reason", _reason(event.error))
        self._settle(state, "failover")

    def _retry(self, event: Event) -> None:
        state = self._requests.get(event.request_id)
        if state is None:
            return
        self._settle(state, "failover")
        state.span.add_event(
            "llmrouter.retry", {"llmrouter.backend": event.backend, "llmrouter.wait": event.detail}
        )

    def _skip(self, event: Event) -> None:
        state = self._request(event)
        if state is None:
            return
        self._settle(state, "failover")
        attempt = state.attempts.get(event.attempt) if event.attempt else None
        if attempt is not None:  # admitted, then refused before sending (a missing feature)
            attempt.span.set_attribute("error.type", type(event.error).__name__)
            self._end_attempt(state, event.attempt, "skipped")
            return
        state.span.add_event(
            "llmrouter.skip",
            {"llmrouter.backend": event.backend, "llmrouter.skip.reason": _reason(event.error)},
        )

    def _first_token(self, event: Event) -> None:
        state = self._requests.get(event.request_id)
        if state is None:
            return
        state.span.set_attribute("gen_ai.response.time_to_first_chunk", event.elapsed_s)
        attempt = state.attempts.get(event.attempt)
        if attempt is not None:
            since = (time.monotonic_ns() - attempt.started_ns) / 1e9
            attempt.span.set_attribute("gen_ai.response.time_to_first_chunk", since)
        self._ttft.record(event.elapsed_s, self._metric_attributes(state))

    def _success(self, event: Event) -> None:
        with self._lock:
            state = self._requests.pop(event.request_id, None)
        if state is None:
            return
        self._settle(state, "failover")
        state.backend = event.backend
        # One set_attributes call: the SDK locks and validates per call.
        attributes: dict[str, Any] = {
            "llmrouter.backend": event.backend,
            "llmrouter.attempts": event.attempt,
            "gen_ai.system": state.system,
            "gen_ai.provider.name": state.system,
        }
        response = event.response
        model = ""
        usage: Any = None
        reasons: list[str] = []
        output: list[dict[str, Any]] | None = None
        if isinstance(response, ChunkAccumulator):
            model, usage = response.model, response.usage
            if response.finish_reason is not None:
                reasons = [response.finish_reason]
            if self.capture_content:
                message: dict[str, Any] = {"role": "assistant", "content": response.text}
                if response.tool_calls:
                    message["tool_calls"] = response.tool_call_list()
                output = [message]
        elif response is not None:
            model, usage = response.model, response.usage
            reasons = [c.finish_reason for c in response.choices if c.finish_reason is not None]
            if response.id:
                attributes["gen_ai.response.id"] = response.id
            if self.capture_content:
                output = [c.message.model_dump(exclude_none=True) for c in response.choices]
        if model:
            state.response_model = model
            attributes["gen_ai.response.model"] = model
        if reasons:
            attributes["gen_ai.response.finish_reasons"] = reasons
        if output is not None:
            attributes["gen_ai.output.messages"] = json.dumps(output, default=str)
        counts: list[tuple[str, int]] = []
        if usage is not None:
            for kind, count in (
                ("input", getattr(usage, "prompt_tokens", None)),
                ("output", getattr(usage, "completion_tokens", None)),
            ):
                if isinstance(count, int):
                    attributes[f"gen_ai.usage.{kind}_tokens"] = count
                    counts.append((kind, count))
        state.span.set_attributes(attributes)
        self._end_attempt(state, event.attempt, "success", model)
        labels = self._metric_attributes(state)
        for kind, count in counts:
            self._tokens.record(count, {**labels, "gen_ai.token.type": kind})
        self._end_request(state, event.elapsed_s, "")

    def _give_up(self, event: Event) -> None:
        with self._lock:
            state = self._requests.pop(event.request_id, None)
        if state is None:
            return
        error = type(event.error).__name__ if event.error is not None else "_OTHER"
        for number in list(state.attempts):  # after content: the attempt itself failed
            self._end_attempt(state, number, "give_up")
        self._end_request(state, event.elapsed_s, error)

    def _cancelled(self, event: Event) -> None:
        state = self._requests.get(event.request_id)
        if state is not None:
            self._end_attempt(state, event.attempt, "hedge_lost")

    def _abandoned(self, event: Event) -> None:
        with self._lock:
            state = self._requests.pop(event.request_id, None)
        if state is None:
            return
        self._end_attempt(state, event.attempt, "abandoned")
        self._end_request(state, event.elapsed_s, "cancelled")

    def _hedge(self, event: Event) -> None:
        state = self._requests.get(event.request_id)
        if state is not None:
            state.span.add_event("llmrouter.hedge", {"llmrouter.wait": event.detail})


_HANDLERS = {
    "attempt_start": Telemetry._attempt_start,
    "failure": Telemetry._failure,
    "failover": Telemetry._failover,
    "retry": Telemetry._retry,
    "skip": Telemetry._skip,
    "first_token": Telemetry._first_token,
    "success": Telemetry._success,
    "give_up": Telemetry._give_up,
    "cancelled": Telemetry._cancelled,
    "abandoned": Telemetry._abandoned,
    "hedge": Telemetry._hedge,
}

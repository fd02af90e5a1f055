"""The gateway's OpenTelemetry (``llmrouter serve --otel``): server spans and the SDK's setup.

Imported only with ``--otel``. Each request to the gateway gets a SERVER span
(``POST /v1/chat/completions``) whose parent is the caller's W3C ``traceparent`` (and
``tracestate``), when it sent one; the client's spans (:mod:`llmrouter.otel`: the request span,
one per attempt) are its children, and each attempt's ``traceparent`` goes on to the backend.
So a trace runs caller -> gateway -> attempt -> backend. ``/health``, ``/ready`` and
``/metrics`` are not traced (probes and scrapers would drown the rest).

Where the traces go: when the process already has providers (``opentelemetry-instrument
llmrouter serve ...``, or an embedding application that set them), those; otherwise
:func:`configure_from_env` sets up the SDK from the standard variables: ``OTEL_TRACES_EXPORTER``
and ``OTEL_METRICS_EXPORTER`` (``otlp``, the default, ``console`` or ``none``),
``OTEL_EXPORTER_OTLP_ENDPOINT`` and the rest of the exporter's own variables,
``OTEL_SERVICE_NAME`` (default ``llmrouter``) and ``OTEL_RESOURCE_ATTRIBUTES``. Each worker of
``--workers N`` sets up its own, after the fork.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from opentelemetry import metrics, propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from llmrouter.errors import ConfigError, MissingDependencyError

__all__ = ["configure_from_env", "tracing_middleware"]

_UNTRACED = frozenset({"/health", "/ready", "/metrics"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def tracing_middleware(tracer_provider: trace.TracerProvider | None = None) -> Any:
    """An aiohttp middleware: one SERVER span per request, the caller's trace its parent."""
    tracer = trace.get_tracer("llmrouter.server", tracer_provider=tracer_provider)

    @web.middleware
    async def traced(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in _UNTRACED:
            return await handler(request)
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else ""
        parent = propagate.extract(request.headers)
        attributes = {"http.request.method": request.method, "url.path": request.path}
        if route:
            attributes["http.route"] = route
        with tracer.start_as_current_span(
            f"{request.method} {route}" if route else request.method,
            context=parent,
            kind=SpanKind.SERVER,
            attributes=attributes,
            record_exception=False,  # an exception's text may quote the request
        ) as span:
            response = await handler(request)
            span.set_attribute("http.response.status_code", response.status)
            if response.status >= 500:
                span.set_attribute("error.type", str(response.status))
                span.set_status(Status(StatusCode.ERROR))
            return response

    return traced


def _names(variable: str) -> list[str]:
    value = os.environ.get(variable, "otlp")
    return [v.strip().lower() for v in value.split(",") if v.strip()]


def _span_exporter(name: str) -> Any:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if name == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise MissingDependencyError(
                "opentelemetry-exporter-otlp-proto-http", "otel", "OTLP trace export"
            ) from None
        return OTLPSpanExporter()
    raise ConfigError(f"OTEL_TRACES_EXPORTER={name!r}: expected 'otlp', 'console' or 'none'")


def _metric_exporter(name: str) -> Any:
    if name == "console":
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

        return ConsoleMetricExporter()
    if name == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        except ImportError:
            raise MissingDependencyError(
                "opentelemetry-exporter-otlp-proto-http", "otel", "OTLP metric export"
            ) from None
        return OTLPMetricExporter()
    raise ConfigError(f"OTEL_METRICS_EXPORTER={name!r}: expected 'otlp', 'console' or 'none'")


def _is_proxy(provider: object) -> bool:
    """Whether a global provider is still the API's placeholder (nobody set one)."""
    return type(provider).__name__ in ("ProxyTracerProvider", "_ProxyMeterProvider")


def configure_from_env() -> Callable[[], None]:
    """Set up the SDK's providers from the ``OTEL_*`` variables where none is set yet.

    Returns:
        a function that flushes and shuts down what was set up here (nothing otherwise).

    Raises:
        ConfigError: an exporter name is not known.
        MissingDependencyError: OTLP export is asked for and its exporter is not installed.
    """
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    defaults = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": "llmrouter"}
    resource = Resource.create(defaults)
    shutdowns: list[Callable[[], object]] = []
    if _is_proxy(trace.get_tracer_provider()):
        names = [n for n in _names("OTEL_TRACES_EXPORTER") if n != "none"]
        exporters = [_span_exporter(n) for n in names]
        tracer_provider = TracerProvider(resource=resource)
        for exporter in exporters:
            tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
        trace.set_tracer_provider(tracer_provider)
        shutdowns.append(tracer_provider.shutdown)
    if _is_proxy(metrics.get_meter_provider()):
        names = [n for n in _names("OTEL_METRICS_EXPORTER") if n != "none"]
        readers = [PeriodicExportingMetricReader(_metric_exporter(n)) for n in names]
        meter_provider = MeterProvider(resource=resource, metric_readers=readers)
        metrics.set_meter_provider(meter_provider)
        shutdowns.append(meter_provider.shutdown)

    def shutdown() -> None:
        for stop in shutdowns:
            stop()

    return shutdown

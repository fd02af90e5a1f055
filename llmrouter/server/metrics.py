"""Prometheus metrics of the gateway, in the text exposition format (written here, no client).

Fed from two places: the client's ``on_event`` hook (attempts, failures by error class,
retries, failovers, breaker changes, per backend) and each finished request (status, latency,
time to first token, tokens in and out from ``.usage``, the serving backend from ``.route``).
Breaker states, open connections and the event loop's task count are read when scraped.
Label values are backend display names (URLs with secrets removed), statuses and error class
names: never a key, never content.

Format: https://prometheus.io/docs/instrumenting/exposition_formats/ (version 0.0.4).
"""

from __future__ import annotations

import abc
import asyncio
import bisect
import contextlib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence

from aiohttp import web

from llmrouter.events import Event

__all__ = ["CONTENT_TYPE", "METRICS", "Counter", "GatewayMetrics", "Gauge", "Histogram"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BREAKER_VALUES = {"closed": 0, "half_open": 1, "open": 2}

Labels = tuple[str, ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _labels(names: Sequence[str], values: Labels, extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class _Metric(abc.ABC):
    kind = ""

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help_text
        self.label_names = tuple(labels)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    @abc.abstractmethod
    def lines(self) -> Iterable[str]:
        """The sample lines of this metric in the Prometheus text format."""


class Counter(_Metric):
    """A monotonically increasing count per label set."""

    kind = "counter"

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, labels)
        self.values: dict[Labels, float] = {}

    def inc(self, labels: Labels = (), amount: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def lines(self) -> Iterable[str]:
        for labels, value in sorted(self.values.items()):
            yield f"{self.name}{_labels(self.label_names, labels)} {_number(value)}"


class Gauge(Counter):
    """A value that goes up and down; ``set`` or ``inc`` with a negative amount."""

    kind = "gauge"

    def set(self, labels: Labels, value: float) -> None:
        self.values[labels] = value


class Histogram(_Metric):
    """Observations counted in cumulative ``le`` buckets, with their sum and count."""

    kind = "histogram"

    def __init__(
        self,
        name: str,
        help_text: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> None:
        super().__init__(name, help_text, labels)
        self.buckets = tuple(sorted(buckets))
        # Per label set: a count per bucket (the last one is +Inf), then the sum.
        self.values: dict[Labels, tuple[list[int], list[float]]] = {}

    def observe(self, labels: Labels, value: float) -> None:
        entry = self.values.get(labels)
        if entry is None:
            entry = self.values[labels] = ([0] * (len(self.buckets) + 1), [0.0])
        entry[0][bisect.bisect_left(self.buckets, value)] += 1
        entry[1][0] += value

    def lines(self) -> Iterable[str]:
        bounds = [*(_number(b) for b in self.buckets), "+Inf"]
        for labels, (counts, total) in sorted(self.values.items()):
            running = 0
            for bound, count in zip(bounds, counts, strict=True):
                running += count
                le = _labels(self.label_names, labels, f'le="{bound}"')
                yield f"{self.name}_bucket{le} {running}"
            plain = _labels(self.label_names, labels)
            yield f"{self.name}_sum{plain} {_number(total[0])}"
            yield f"{self.name}_count{plain} {running}"


class GatewayMetrics:
    """Every metric the gateway exports.

    Args:
        breaker_states: returns ``(backend, state)`` for every backend, read at scrape time.
    """

    def __init__(self, breaker_states: Callable[[], list[tuple[str, str]]] | None = None) -> None:
        self.breaker_states = breaker_states
        # Set by GatewayRunner: open connections and those cut, read at scrape time.
        self.connection_counts: Callable[[], Mapping[str, int]] | None = None
        p = "llmrouter_gateway_"
        self.requests = Counter(p + "requests_total", "HTTP requests answered.", ("path", "status"))
        self.errors = Counter(
            p + "errors_total",
            "Requests that ended in an error, by error class.",
            ("path", "error"),
        )
        self.rate_limited = Counter(
            p + "rate_limited_total", "Requests refused by a per-key limit.", ("limit",)
        )
        self.in_flight = Gauge(p + "in_flight_requests", "Requests being served.")
        self.connections = Gauge(p + "open_connections", "Client connections open now.")
        self.connections_cut = Counter(
            p + "connections_cut_total",
            "Connections the gateway cut: header_timeout, over_capacity.",
            ("reason",),
        )
        self.tasks = Gauge(
            p + "event_loop_tasks", "asyncio tasks alive in the gateway (a leak shows as growth)."
        )
        self.latency = Histogram(
            p + "request_duration_seconds", "Time to answer a request (whole stream).", ("path",)
        )
        self.ttft = Histogram(
            p + "time_to_first_token_seconds",
            "Streams: from the request to its first content chunk.",
            ("backend",),
        )
        self.tokens = Counter(
            p + "tokens_total",
            "Tokens by backend and direction (in: prompt, out: completion).",
            ("backend", "direction"),
        )
        b = "llmrouter_backend_"
        self.attempts = Counter(b + "attempts_total", "Calls made to a backend.", ("backend",))
        self.backend_errors = Counter(
            b + "errors_total", "Failed calls, by error class.", ("backend", "error")
        )
        self.backend_latency = Histogram(
            b + "attempt_duration_seconds", "Duration of successful attempts.", ("backend",)
        )
        self.retries = Counter(b + "retries_total", "Retries of a backend.", ("backend",))
        self.failovers = Counter(
            b + "failovers_total", "Requests moved away from a backend.", ("backend",)
        )
        self.skips = Counter(
            b + "skips_total", "Calls skipped (breaker open, capability missing).", ("backend",)
        )
        self.breaker_changes = Counter(
            b + "breaker_transitions_total",
            "Circuit breaker changes, by new state.",
            ("backend", "state"),
        )
        self.breaker = Gauge(
            b + "breaker_state", "Circuit breaker now: 0 closed, 1 half-open, 2 open.", ("backend",)
        )
        self._all: list[_Metric] = [
            self.requests,
            self.errors,
            self.rate_limited,
            self.in_flight,
            self.connections,
            self.connections_cut,
            self.tasks,
            self.latency,
            self.ttft,
            self.tokens,
            self.attempts,
            self.backend_errors,
            self.backend_latency,
            self.retries,
            self.failovers,
            self.skips,
            self.breaker_changes,
            self.breaker,
        ]
        self.in_flight.set((), 0)

    def on_event(self, event: Event) -> None:
        """The client's ``on_event`` hook: must be quick and must not raise."""
        kind = event.kind
        backend = event.backend
        if kind == "attempt_start":
            self.attempts.inc((backend,))
        elif kind == "failure":
            self.backend_errors.inc((backend, type(event.error).__name__))
        elif kind == "retry":
            self.retries.inc((backend,))
        elif kind == "failover":
            self.failovers.inc((backend,))
        elif kind == "skip":
            self.skips.inc((backend,))
        elif kind == "breaker":
            self.breaker_changes.inc((backend, event.detail.rpartition("->")[2]))

    def render(self) -> str:
        """The whole exposition, ending with a newline."""
        if self.breaker_states is not None:
            for backend, state in self.breaker_states():
                self.breaker.set((backend,), BREAKER_VALUES.get(state, 0))
        if self.connection_counts is not None:
            counts = self.connection_counts()
            self.connections.set((), counts["open"])
            for reason in ("header_timeout", "over_capacity"):
                self.connections_cut.values[(reason,)] = counts[reason]
        with contextlib.suppress(RuntimeError):  # RuntimeError: rendered outside a loop (tests)
            self.tasks.set((), len(asyncio.all_tasks()))
        out: list[str] = []
        for metric in self._all:
            out.extend(metric.header())
            out.extend(metric.lines())
        return "\n".join(out) + "\n"


METRICS = web.AppKey("metrics", GatewayMetrics)

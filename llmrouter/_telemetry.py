"""Which events a client sends where: its ``on_event`` hook, and telemetry when it is on.

Kept apart from :mod:`llmrouter.otel` so that a client with telemetry off never imports
OpenTelemetry: that module is imported here, and only when telemetry is turned on.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from llmrouter.events import Event, EventSink, Subscriber

__all__ = ["client_sink", "telemetry_enabled"]


def telemetry_enabled() -> bool:
    """Whether ``LLMROUTER_OTEL`` turns OpenTelemetry on for clients that do not say."""
    return os.environ.get("LLMROUTER_OTEL", "").strip().lower() in ("1", "true", "yes", "on")


def client_sink(
    hook: Callable[[Event], None] | None, telemetry: bool | Subscriber | None = None
) -> EventSink:
    """The sink of a client's ``on_event`` and ``telemetry`` arguments.

    ``telemetry``: ``True`` sends spans and metrics to OpenTelemetry's global providers (a
    :class:`llmrouter.otel.Telemetry`, imported only then); a subscriber object is used as
    given; ``None`` (the default) means ``True`` when ``LLMROUTER_OTEL=1``; ``False`` is off.

    Raises:
        MissingDependencyError: telemetry is on and ``llmrouter[otel]`` is not installed.
    """
    if telemetry is None:
        telemetry = telemetry_enabled()
    if telemetry is False:
        return EventSink(hook)
    if telemetry is True:
        from llmrouter.otel import Telemetry  # the opentelemetry import happens here only

        telemetry = Telemetry()
    subscriber = telemetry.on_event
    if hook is None:
        return EventSink(subscriber)
    user_hook = hook

    def both(event: Event) -> None:
        subscriber(event)
        user_hook(event)

    return EventSink(both)

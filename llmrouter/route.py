"""What llmrouter adds beside the OpenAI JSON: which backend served a request, and how.

A :class:`Route` rides on every response and stream as ``.route``; it is never part of
``model_dump()``, so the JSON stays exactly what the server sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Attempt", "Route"]


@dataclass(slots=True)
class Attempt:
    """One try at one backend.

    Attributes:
        backend: the backend's display name (its URL with secrets removed).
        error: what went wrong, or ``None`` for the attempt that succeeded.
        duration_s: wall time spent on this attempt, in seconds.
        skipped: the backend was not called (for example its circuit breaker was open).
    """

    backend: str
    error: BaseException | None = None
    duration_s: float = 0.0
    skipped: bool = False

    def describe(self) -> str:
        """One line for reports: ``backend: outcome (12 ms)``."""
        if self.skipped:
            outcome = f"skipped ({self.error})" if self.error else "skipped"
        elif self.error is None:
            outcome = "ok"
        else:
            outcome = f"{type(self.error).__name__}: {_short(self.error)}"
        return f"{self.backend}: {outcome} ({self.duration_s * 1000:.0f} ms)"


def _short(error: BaseException) -> str:
    text = getattr(error, "message", None) or str(error)
    return text if len(text) <= 200 else text[:197] + "..."


@dataclass(slots=True)
class Route:
    """How a request was served.

    Attributes:
        backend: the display name of the backend that served it ("" while a stream is opening).
        attempts: every attempt, in order, the successful one last.
    """

    backend: str = ""
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def failovers(self) -> int:
        """How many backends were given up on before the one that served."""
        return sum(1 for a in self.attempts if a.error is not None)

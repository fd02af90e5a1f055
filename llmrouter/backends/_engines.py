"""What the in-process engines (llama.cpp, vLLM) share: a per-process registry that keeps one
engine per key, counts its users, frees it with the last one and at interpreter exit; and the
OpenAI fields that mean nothing in process."""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable, Hashable
from typing import Generic, Protocol, TypeVar

__all__ = ["IGNORED_IN_PROCESS", "EngineRegistry"]

# OpenAI fields with no meaning for an in-process engine: accepted and ignored, as servers do.
IGNORED_IN_PROCESS = frozenset(
    {
        "user",
        "metadata",
        "store",
        "service_tier",
        "parallel_tool_calls",
        "prompt_cache_key",
        "safety_identifier",
        "reasoning_effort",
        "verbosity",
    }
)


class _Engine(Protocol):
    users: int

    def close(self) -> None: ...


E = TypeVar("E", bound=_Engine)


class EngineRegistry(Generic[E]):
    """One engine per key per process, shared by every client that names it."""

    def __init__(self) -> None:
        self.engines: dict[Hashable, E] = {}
        self._lock = threading.Lock()
        atexit.register(self.close_all)

    def acquire(
        self, key: Hashable, start: Callable[[], E], stale: Callable[[E], bool] | None = None
    ) -> E:
        """The engine for ``key`` (started by ``start`` on first use), with one more user.

        ``stale`` says an existing engine is unusable (it died): it is closed and replaced.
        """
        with self._lock:
            engine = self.engines.get(key)
            if engine is not None and stale is not None and stale(engine):
                del self.engines[key]
                engine.close()
                engine = None
            if engine is None:
                engine = self.engines[key] = start()
            engine.users += 1
            return engine

    def release(self, engine: E) -> None:
        """Drop one user; the last one frees the engine."""
        with self._lock:
            engine.users -= 1
            if engine.users > 0:
                return
            for key, value in list(self.engines.items()):
                if value is engine:
                    del self.engines[key]
        engine.close()

    def close_all(self) -> None:
        """Free every engine (at interpreter exit)."""
        with self._lock:
            engines = list(self.engines.values())
            self.engines.clear()
        for engine in engines:
            engine.close()

"""Where breaker, health, retry-budget, balancer and rate-limit state lives: this process, or
Redis.

The default is :class:`MemoryState`: every client keeps its own state, exactly as before, and
the router pays nothing for the choice (it sees no store at all). ``LLMROUTER_STATE=redis://…``
(or ``Client(state=...)``) shares that state across processes and machines through Redis;
``llmrouter[redis]`` installs redis-py, which is imported only when such a URL is opened.

* :class:`StateStore` / :class:`AsyncStateStore` — what the router and the gateway ask of a
  store (the sync and async clients' twins);
* :func:`open_state` / :func:`aopen_state` — a URL or an object -> a store (``None`` for memory);
* :func:`parse_state_url` — ``redis://host:6379/0?namespace=prod`` -> (Redis URL, namespace).

The shared adapters (:mod:`llmrouter.state.shared`) keep :mod:`llmrouter.policy` pure: each wraps
the in-process object and falls back to it whenever Redis is unreachable. See
``docs/scale-out.md`` for the keys, the round trips and the consistency guarantees.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from llmrouter.errors import ConfigError
from llmrouter.state.keys import key_id, parse_state_url

if TYPE_CHECKING:
    from llmrouter.policy import Balancer, CircuitBreaker, RetryBudget
    from llmrouter.state.shared import SharedBalancer, SharedBreaker, SharedBudget

__all__ = [
    "AsyncStateStore",
    "MemoryState",
    "StateStore",
    "aopen_state",
    "key_id",
    "open_state",
    "parse_state_url",
]


class MemoryState:
    """In-process state (the default): nothing is shared, nothing is added to a request."""

    def __repr__(self) -> str:
        return "MemoryState()"


@runtime_checkable
class StateStore(Protocol):
    """A shared store as the sync :class:`~llmrouter.Client` uses it."""

    namespace: str

    def breaker(self, backend: str, local: CircuitBreaker) -> SharedBreaker:
        """``local`` (this process's breaker for ``backend``), shared through the store."""
        ...

    def budget(self, local: RetryBudget) -> SharedBudget:
        """``local`` (this client's retry budget), shared through the store."""
        ...

    def balancer(self, names: list[str], local: Balancer) -> Balancer | SharedBalancer:
        """``local`` (the balancer of the group of backends ``names``), its latency estimates
        and in-flight counts shared through the store; ``local`` itself when sharing would not
        change its choices (one replica, ``round_robin``)."""
        ...

    def start(self) -> None:
        """Begin listening for other processes' breaker changes (idempotent, cheap)."""
        ...

    def try_lock(self, name: str, ttl: float) -> bool:
        """Take the lock ``name`` for ``ttl`` seconds unless another holder has it (SET NX PX);
        ``True`` as well when the store is unreachable (act alone rather than not at all)."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class AsyncStateStore(Protocol):
    """A shared store as :class:`~llmrouter.AsyncClient` and the gateway use it."""

    namespace: str

    def breaker(self, backend: str, local: CircuitBreaker) -> SharedBreaker: ...

    def budget(self, local: RetryBudget) -> SharedBudget: ...

    def balancer(self, names: list[str], local: Balancer) -> Balancer | SharedBalancer: ...

    def start(self) -> None: ...

    async def try_lock(self, name: str, ttl: float) -> bool: ...

    async def bucket(
        self, name: str, capacity: float, per_second: float, amount: float, take: bool
    ) -> float | None:
        """One atomic token-bucket step (see :class:`~llmrouter.server.ratelimit.TokenBucket`):
        take ``amount`` (returns 0.0, or the seconds to wait) or charge it (``take=False``,
        returns 0.0); ``None`` when the store is unreachable (use local state)."""
        ...

    async def aclose(self) -> None: ...


def _memory(state: object) -> bool:
    if state is None or isinstance(state, MemoryState):
        return True
    return isinstance(state, str) and state.strip() in ("", "memory", "memory://")


def _from_env(state: object) -> object:
    if state is None:
        from llmrouter.config import state_url

        return state_url()
    return state


def open_state(state: str | StateStore | MemoryState | None) -> StateStore | None:
    """The sync client's store: ``None`` (read ``LLMROUTER_STATE``), a URL, or a store.

    Returns ``None`` for in-process memory.
    """
    state = _from_env(state)  # type: ignore[assignment]
    if _memory(state):
        return None
    if isinstance(state, str):
        from llmrouter.state.redis_state import RedisState

        return RedisState(state)
    if not isinstance(state, StateStore):
        raise ConfigError(f"state: expected a URL or a state store, got {type(state).__name__}")
    return state


def aopen_state(state: str | AsyncStateStore | MemoryState | None) -> AsyncStateStore | None:
    """The async client's store: ``None`` (read ``LLMROUTER_STATE``), a URL, or a store.

    Returns ``None`` for in-process memory.
    """
    state = _from_env(state)  # type: ignore[assignment]
    if _memory(state):
        return None
    if isinstance(state, str):
        from llmrouter.state.redis_state import AsyncRedisState

        return AsyncRedisState(state)
    if not isinstance(state, AsyncStateStore):
        raise ConfigError(
            f"state: expected a URL or an async state store, got {type(state).__name__}"
        )
    return state

"""Per-key rate limits: requests and tokens per minute, as token buckets (pure, clock injected).

:class:`RateLimiter` touches neither the network nor the event loop. With ``LLMROUTER_STATE``
set, the gateway uses :class:`SharedRateLimiter` instead: the same buckets as one Lua script in
Redis holding ``level`` and ``updated`` per key (``llmrouter/state/redis_state.py``), shared by
every gateway replica. A bucket holds up to ``capacity`` units and refills at
``capacity / 60`` per second.

Tokens are only known once a request has been served, so the token bucket works by
reservation: a request reserves an estimate of its prompt's tokens on admission (capped at the
bucket's capacity, so one large request can still pass when the bucket is full), and
:meth:`RateLimiter.settle_tokens` charges the difference once the real usage is known. The
bucket may go into debt; later requests from that key wait until it has refilled.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llmrouter.state import key_id

if TYPE_CHECKING:
    from llmrouter.state import AsyncStateStore

__all__ = ["RateLimiter", "SharedRateLimiter", "TokenBucket", "estimate_prompt_tokens"]

Clock = Callable[[], float]


class TokenBucket:
    """A token bucket: ``capacity`` units, refilled at ``per_second`` units per second.

    Args:
        capacity: the most units the bucket holds (the burst allowed).
        per_second: the refill rate.
        now: the clock reading at creation (the bucket starts full).
    """

    __slots__ = ("capacity", "level", "per_second", "updated")

    def __init__(self, capacity: float, per_second: float, now: float) -> None:
        if capacity <= 0 or per_second <= 0:
            raise ValueError("a token bucket needs a positive capacity and refill rate")
        self.capacity = float(capacity)
        self.per_second = float(per_second)
        self.level = float(capacity)
        self.updated = now

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.per_second)
            self.updated = now

    def take(self, amount: float, now: float) -> float:
        """Take ``amount`` units (capped at the capacity) if the bucket holds them.

        Returns:
            0.0 when taken; otherwise the seconds until they would be available (nothing taken).
        """
        self._refill(now)
        amount = min(amount, self.capacity)
        if self.level >= amount:
            self.level -= amount
            return 0.0
        return (amount - self.level) / self.per_second

    def adjust(self, amount: float, now: float) -> None:
        """Charge ``amount`` more units (negative: give some back); the level may go below 0."""
        self._refill(now)
        self.level = min(self.capacity, self.level - amount)


@dataclass(frozen=True, slots=True)
class Denial:
    """A request refused by a limit.

    Attributes:
        limit: which limit: ``"requests"`` or ``"tokens"``.
        per_minute: that limit's value.
        retry_after: seconds until the request would be admitted.
    """

    limit: str
    per_minute: int
    retry_after: float

    @property
    def retry_after_header(self) -> str:
        """The ``Retry-After`` value: whole seconds, at least 1."""
        return str(max(1, math.ceil(self.retry_after)))


class RateLimiter:
    """Requests-per-minute and tokens-per-minute limits, one pair of buckets per key id.

    Args:
        requests_per_minute: the request limit per key (``None``: unlimited).
        tokens_per_minute: the token limit per key, prompt and completion (``None``: unlimited).
        clock: seconds, monotonic (injected in tests).
    """

    def __init__(
        self,
        requests_per_minute: int | None = None,
        tokens_per_minute: int | None = None,
        *,
        clock: Clock = time.monotonic,
    ) -> None:
        for name, value in (("requests", requests_per_minute), ("tokens", tokens_per_minute)):
            if value is not None and (isinstance(value, bool) or value <= 0):
                raise ValueError(f"{name} per minute: expected a positive integer, got {value!r}")
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self._clock = clock
        self._requests: dict[str, TokenBucket] = {}
        self._tokens: dict[str, TokenBucket] = {}

    @property
    def enabled(self) -> bool:
        """Whether any limit is set."""
        return self.requests_per_minute is not None or self.tokens_per_minute is not None

    @staticmethod
    def _bucket(buckets: dict[str, TokenBucket], key: str, limit: int, now: float) -> TokenBucket:
        bucket = buckets.get(key)
        if bucket is None:
            bucket = buckets[key] = TokenBucket(limit, limit / 60.0, now)
        return bucket

    def admit_request(self, key: str) -> Denial | None:
        """Count one request against ``key``; a :class:`Denial` when over the limit."""
        limit = self.requests_per_minute
        if limit is None:
            return None
        now = self._clock()
        wait = self._bucket(self._requests, key, limit, now).take(1, now)
        return Denial("requests", limit, wait) if wait > 0 else None

    def reserve_tokens(self, key: str, estimate: int) -> tuple[int, Denial | None]:
        """Reserve an estimate of a request's tokens before it is sent.

        The reservation is capped at the limit, so one request larger than the bucket can still
        pass when the bucket is full. When the bucket is in debt (earlier requests used more
        than they reserved), the request waits until it has refilled.

        Returns:
            the tokens reserved (pass them to :meth:`settle_tokens`; 0 when refused or when
            there is no token limit), and a :class:`Denial` when over the limit.
        """
        limit = self.tokens_per_minute
        if limit is None:
            return 0, None
        amount = min(max(estimate, 1), limit)
        now = self._clock()
        wait = self._bucket(self._tokens, key, limit, now).take(amount, now)
        if wait > 0:
            return 0, Denial("tokens", limit, wait)
        return amount, None

    def settle_tokens(self, key: str, reserved: int, used: int) -> None:
        """Charge the real usage of a request that reserved ``reserved`` tokens."""
        limit = self.tokens_per_minute
        if limit is None or used == reserved:
            return
        now = self._clock()
        self._bucket(self._tokens, key, limit, now).adjust(used - reserved, now)


def estimate_prompt_tokens(body_bytes: int) -> int:
    """A rough prompt size before the backend has counted it: about 4 bytes of JSON a token."""
    return max(1, body_bytes // 4)


class SharedRateLimiter:
    """The same limits as :class:`RateLimiter`, held in a shared store (one atomic Lua step,
    one round trip, per decision), so several gateway replicas enforce one limit per key.

    When the store is unreachable each decision falls back to this replica's own
    :class:`RateLimiter` (the store logs the outage once), so Redis trouble never refuses or
    fails a request.

    Args:
        store: an :class:`~llmrouter.state.AsyncStateStore` (``AsyncRedisState``).
        requests_per_minute / tokens_per_minute: as for :class:`RateLimiter`.
    """

    def __init__(
        self,
        store: AsyncStateStore,
        requests_per_minute: int | None = None,
        tokens_per_minute: int | None = None,
    ) -> None:
        self.local = RateLimiter(requests_per_minute, tokens_per_minute)
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self._store = store

    @property
    def enabled(self) -> bool:
        return self.local.enabled

    async def admit_request(self, key: str) -> Denial | None:
        limit = self.requests_per_minute
        if limit is None:
            return None
        wait = await self._store.bucket(f"rpm:{key_id(key)}", limit, limit / 60.0, 1, True)
        if wait is None:
            return self.local.admit_request(key)
        return Denial("requests", limit, wait) if wait > 0 else None

    async def reserve_tokens(self, key: str, estimate: int) -> tuple[int, Denial | None]:
        limit = self.tokens_per_minute
        if limit is None:
            return 0, None
        amount = min(max(estimate, 1), limit)
        wait = await self._store.bucket(f"tpm:{key_id(key)}", limit, limit / 60.0, amount, True)
        if wait is None:
            return self.local.reserve_tokens(key, estimate)
        if wait > 0:
            return 0, Denial("tokens", limit, wait)
        return amount, None

    async def settle_tokens(self, key: str, reserved: int, used: int) -> None:
        limit = self.tokens_per_minute
        if limit is None or used == reserved:
            return
        amount = used - reserved
        done = await self._store.bucket(f"tpm:{key_id(key)}", limit, limit / 60.0, amount, False)
        if done is None:
            self.local.settle_tokens(key, reserved, used)

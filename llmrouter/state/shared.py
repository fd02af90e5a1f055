"""Shared-state adapters: a circuit breaker and a retry budget that several processes share.

Each adapter wraps the pure in-process object from :mod:`llmrouter.policy` and offers the same
methods, so the router cannot tell them apart. The in-process object always holds this
process's view and decides alone whenever the store is unreachable; the store only *adds*
what other processes saw. The adapters never wait on the network themselves: they call a
:class:`Backplane`, whose sync implementation performs a command inline (one round trip, 50 ms
at most) and whose async implementation runs it as a task and calls back with the answer.

Consistency (``docs/scale-out.md`` has the long form):

* A closed breaker costs no round trip. Failures are counted per process (the policy's
  thresholds apply to what this process saw); the moment one process's breaker opens, it writes
  ``open`` with the cooldown as expiry and publishes it; every subscribed process opens its own
  breaker when the message arrives (one round trip later), for the time the key has left.
* When the key expires, a process that wants to call the backend must first win the probe lock
  (SET NX PX, in a script that also checks the breaker is no longer open): one probe
  cluster-wide. Its success deletes the key and publishes ``close``; its failure re-opens.
* The retry budget deposits and spends locally and flushes both, with the cluster's totals
  read back in the same pipeline, at most once a second; between flushes it decides on the last
  totals plus what this process did since.
* A balancer (``latency`` or ``least_outstanding``, two replicas or more) rides the same
  flush: its latency estimates and requests in flight go out, the other processes' come back.
  Between flushes it orders replicas by its own live values blended with the last ones read
  (the mean of the processes' latency estimates; in-flight counts added up); a view older
  than ``STALE_AFTER``, or a store that is down, leaves it to its own values.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Protocol

from llmrouter.policy import Balancer, BreakerState, CircuitBreaker, RetryBudget, Strategy

__all__ = ["Backplane", "SharedBalancer", "SharedBreaker", "SharedBudget"]

FLUSH_INTERVAL = 1.0  # seconds between retry-budget flushes
STALE_AFTER = 5.0  # cluster budget totals older than this are not trusted


class Backplane(Protocol):
    """The store's side of the adapters: fire-and-forget commands with optional answers."""

    @property
    def active(self) -> bool:
        """Reachable (or not known to be down): share; otherwise decide locally."""
        ...

    def publish_open(self, key: str, cooldown: float) -> None: ...

    def publish_close(self, key: str) -> None: ...

    def acquire_probe(
        self, key: str, ttl: float, force: bool, done: Callable[[float | None], None]
    ) -> None:
        """Ask for the cluster's one probe of ``key``: ``done(0.0)`` granted, ``done(s)``
        still open for ``s`` seconds, ``done(-1.0)`` another process probes, ``done(None)``
        the store failed."""
        ...

    def flush_budget(
        self,
        requests: int,
        spent: int,
        ttl: float,
        done: Callable[[tuple[float, float] | None], None],
    ) -> None:
        """Add this process's counts; ``done((requests, spent))``: the cluster's totals over
        the last ``ttl`` seconds, ``done(None)`` on failure."""
        ...


def _closed(breaker: CircuitBreaker) -> bool:
    return breaker.state == "closed"


class SharedBreaker:
    """A :class:`CircuitBreaker` whose openings, probes and closings are cluster-wide."""

    def __init__(self, local: CircuitBreaker, key: str, store: Backplane) -> None:
        self.local = local
        self.key = key
        self._store = store
        self._granted = False  # this process holds the cluster's probe
        self._asking = False

    @property
    def generation(self) -> int:
        return self.local.generation

    @property
    def state(self) -> BreakerState:
        return self.local.state

    @property
    def cooldown(self) -> float:
        return self.local.cooldown

    def cooldown_remaining(self) -> float:
        return self.local.cooldown_remaining()

    def _probe_ttl(self) -> float:
        # Long enough for a probe to finish; a holder that dies frees it after this.
        return max(self.local.cooldown, 5.0)

    def _ask(self, force: bool) -> None:
        if not self._asking:
            self._asking = True
            self._store.acquire_probe(self.key, self._probe_ttl(), force, self._answer)

    def _answer(self, result: float | None) -> None:
        self._asking = False
        if result is None:
            return  # the store is down now: allow() decides locally
        if result == 0.0:
            self._granted = True
        elif result > 0:
            self.local.trip(result)  # still open cluster-wide (a message we missed)

    def _take_grant(self) -> bool:
        if self._granted:
            self._granted = False
            return True
        return False

    def allow(self) -> bool:
        """Closed: yes, with no round trip. Half-open: only with the cluster's probe."""
        local = self.local
        if not self._store.active:
            return local.allow()
        state = local.state
        if state == "closed":
            return True
        if state == "open":
            return False
        if not self._granted:
            self._ask(force=False)  # sync stores answer before returning
        return self._take_grant() and local.allow()

    def force_probe(self) -> bool:
        """Every backend is open: probe this one now, if no other process is probing it."""
        if not self._store.active:
            return self.local.force_probe()
        if not self._granted:
            self._ask(force=True)
        if self._take_grant():
            return self.local.force_probe()
        return False

    def trip(self, cooldown: float | None = None) -> None:
        self.local.trip(cooldown)
        if self._store.active:
            self._store.publish_open(self.key, self.local.cooldown_remaining())

    def record_failure(self, generation: int | None = None) -> None:
        local = self.local
        before = local.generation
        local.record_failure(generation)
        if local.generation != before and self._store.active:
            self._store.publish_open(self.key, local.cooldown)

    def record_success(self, generation: int | None = None) -> None:
        local = self.local
        was_closed = local.state == "closed"
        local.record_success(generation)
        if not was_closed and _closed(local) and self._store.active:
            self._store.publish_close(self.key)

    # -- from other processes ------------------------------------------------------------

    def remote_open(self, remaining: float) -> None:
        self._granted = False
        self.local.trip(remaining)

    def remote_close(self) -> None:
        self._granted = False
        if self.local.state != "closed":
            self.local.record_success()


class SharedBudget:
    """A :class:`RetryBudget` over the whole cluster's requests and retries."""

    def __init__(
        self,
        local: RetryBudget,
        store: Backplane,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.local = local
        self._store = store
        self._clock = clock
        self._requests = 0  # since the last flush
        self._spent = 0
        self._cluster: tuple[float, float] | None = None
        self._cluster_at = 0.0
        self._flushed_at = -FLUSH_INTERVAL

    def record_request(self) -> None:
        self.local.record_request()
        self._requests += 1
        now = self._clock()
        if now - self._flushed_at >= FLUSH_INTERVAL and self._store.active:
            self.flush(now)

    def flush(self, now: float | None = None) -> None:
        """Send this process's counts and read the cluster's (one pipelined round trip)."""
        self._flushed_at = self._clock() if now is None else now
        requests, spent = self._requests, self._spent
        self._requests = self._spent = 0

        def done(totals: tuple[float, float] | None) -> None:
            if totals is not None:
                self._cluster, self._cluster_at = totals, self._clock()

        self._store.flush_budget(requests, spent, self.local.ttl, done)

    def _shared_available(self) -> float | None:
        if (
            not self._store.active
            or self._cluster is None
            or self._clock() - self._cluster_at > STALE_AFTER
        ):
            return None
        requests, spent = self._cluster
        local = self.local
        allowed = local.ratio * (requests + self._requests) + local.min_per_second * local.ttl
        return allowed - (spent + self._spent)

    def available(self) -> float:
        shared = self._shared_available()
        return self.local.available() if shared is None else shared

    def try_spend(self) -> bool:
        shared = self._shared_available()
        if shared is None:
            return self.local.try_spend()
        if shared < 1:
            return False
        self._spent += 1
        self.local.try_spend()  # keep the local view current for when the store goes away
        return True

    def stats(self) -> dict[str, float]:
        stats = self.local.stats()
        stats["available"] = self.available()
        return stats


class SharedBalancer:
    """A :class:`Balancer` that orders replicas by the whole cluster's latency estimates and
    requests in flight, not only this process's.

    ``started`` and ``finished`` touch only the local balancer (no I/O); the store reads
    :meth:`snapshot` and calls :meth:`absorb` with the other processes' values during its
    once-a-second budget flush, so :meth:`order` never waits on the network either.
    """

    def __init__(
        self,
        local: Balancer,
        keys: Sequence[str],
        field: str,
        store: Backplane,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.local = local
        self.keys = list(keys)  # one hashed backend id per replica
        self.field = field  # this balancer's entry in the store (process id and a serial)
        self._store = store
        self._clock = clock
        # (latency (sum, count) per replica, in flight per replica, when read); one reference,
        # replaced whole, so a reader on another thread never sees half of an update.
        self._cluster: tuple[list[tuple[float, int]], list[float], float] | None = None

    @property
    def strategy(self) -> Strategy:
        return self.local.strategy

    @property
    def weights(self) -> list[float]:
        return self.local.weights

    def order(self) -> list[int]:
        """Replica indexes, most preferred first: by the blended view while it is fresh."""
        cluster = self._cluster
        if cluster is None or self._clock() - cluster[2] > STALE_AFTER or not self._store.active:
            return self.local.order()
        return self.local.order_with(cluster[0], cluster[1])

    def started(self, i: int) -> None:
        self.local.started(i)

    def finished(self, i: int, latency: float | None) -> None:
        self.local.finished(i, latency)

    # -- the store's side -------------------------------------------------------------------

    def snapshot(self) -> list[str]:
        """This process's values, one per replica: ``"<latency s or -> <in flight>"``."""
        local = self.local
        return [
            f"{'-' if latency is None else f'{latency:.6f}'} {max(outstanding, 0)}"
            for latency, outstanding in zip(local.latency, local.outstanding, strict=True)
        ]

    def absorb(self, rows: Sequence[Sequence[bytes | str]]) -> None:
        """The other processes' entries, per replica (``"<ms> <latency> <in flight>"`` each,
        as the store keeps them); malformed entries are skipped."""
        if len(rows) != len(self.keys):
            return
        latency: list[tuple[float, int]] = []
        outstanding: list[float] = []
        for values in rows:
            total, count, flight = 0.0, 0, 0.0
            for value in values:
                text = value.decode() if isinstance(value, bytes) else value
                parts = text.split()
                if len(parts) != 3:
                    continue
                try:
                    seconds = None if parts[1] == "-" else float(parts[1])
                    busy = float(parts[2])
                except ValueError:
                    continue
                if seconds is not None and seconds >= 0:
                    total, count = total + seconds, count + 1
                flight += max(busy, 0.0)
            latency.append((total, count))
            outstanding.append(flight)
        self._cluster = (latency, outstanding, self._clock())

    def cluster(self) -> tuple[list[float | None], list[float]] | None:
        """The other processes' mean latency and total in flight per replica, as last read
        (``None`` before the first read); for diagnostics and tests."""
        cluster = self._cluster
        if cluster is None:
            return None
        means = [total / count if count else None for total, count in cluster[0]]
        return means, list(cluster[1])

"""Runs a request along the backend chain: failover first, then retries, within a deadline.

Every decision (does this error fail over? may this backend be retried, after how long? is its
breaker open? which replica first? is there budget?) is a pure function or object from
``llmrouter.policy``; this module performs them and records what happened in the route.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, Literal, Protocol, TypeVar

from llmrouter._async.function_backend import AsyncFunctionBackend
from llmrouter._async.http_backend import AsyncHTTPBackend
from llmrouter._async.stream import AsyncStream
from llmrouter._concurrency import AsyncSleep, Background, asleep, aspawn
from llmrouter._hedge import ahedged_chat, ahedged_stream
from llmrouter._http import AsyncHTTPTransport
from llmrouter._request import ChatRequest
from llmrouter.backends import registry
from llmrouter.backends.interfaces import AsyncEngine
from llmrouter.config import BackendSpec
from llmrouter.errors import (
    AllBackendsFailedError,
    AuthenticationError,
    BackendConnectionError,
    BackendError,
    BackendTimeoutError,
    ContextLengthError,
    InvalidRequestError,
    RateLimitError,
    ServerError,
)
from llmrouter.events import Event, EventSink
from llmrouter.policy import (
    Balancer,
    CircuitBreaker,
    Deadline,
    RetryBudget,
    RetryPolicy,
    Strategy,
    fails_over,
)
from llmrouter.route import Attempt, Route
from llmrouter.state import AsyncStateStore, key_id
from llmrouter.types import ChatCompletion, ChatCompletionChunk, Model, ModelList

if TYPE_CHECKING:
    from llmrouter.state.shared import SharedBalancer, SharedBreaker, SharedBudget

__all__ = ["AsyncChunkSource", "AsyncRouter", "Execution", "HedgeLostError", "Member", "Try"]

T = TypeVar("T")


class AsyncChunkSource(Protocol):
    """What a backend's open stream offers: the next chunk, and a way to stop."""

    async def __anext__(self) -> ChatCompletionChunk: ...

    async def aclose(self) -> None: ...


AsyncBackend = AsyncHTTPBackend | AsyncEngine

# Failures that say something about the backend's health (a 400 or a 404 does not).
_UNHEALTHY = (
    BackendConnectionError,
    BackendTimeoutError,
    ServerError,
    RateLimitError,
    AuthenticationError,
)


class BreakerOpenError(BackendError):
    """Recorded in the route for a backend skipped because its circuit breaker is open."""


class HedgeLostError(BackendError):
    """Recorded in the route for a hedged attempt cancelled because another one won."""

    retryable = False


def _make_backend(spec: BackendSpec, transport: AsyncHTTPTransport) -> AsyncBackend:
    """The driver for one spec: a ready-made object as given, a plain function wrapped, an
    in-process engine built from its declaration, or a codec over the shared transport."""
    if spec.instance is not None:
        if spec.scheme == "function":
            return AsyncFunctionBackend(spec)
        backend: AsyncBackend = spec.instance  # type: ignore[assignment]
        return backend
    decl = registry.declaration(spec.scheme)
    if decl.kind == "engine":
        built: AsyncBackend = registry.async_engine_class(decl)(spec)
        return built
    return AsyncHTTPBackend(spec, transport, registry.codec_of(decl))


@dataclass(eq=False)
class Member:
    """One backend in the chain, with its breaker and its place in a balanced group."""

    backend: AsyncBackend
    breaker: CircuitBreaker | SharedBreaker  # shared across processes with a state store
    balancer: Balancer | SharedBalancer  # shared across processes with a state store
    index: int  # within its group

    @property
    def name(self) -> str:
        return self.backend.name

    @property
    def spec(self) -> BackendSpec:
        return self.backend.spec


@dataclass(eq=False)
class Execution(Generic[T]):
    """One request's way through the chain: what is left to try, and what happened."""

    request: ChatRequest
    deadline: Deadline
    pending: deque[Member]
    route: Route = field(default_factory=Route)
    started: float = field(default_factory=time.monotonic)
    failed: list[tuple[Member, BaseException]] = field(default_factory=list)
    skipped: list[Member] = field(default_factory=list)
    retries: dict[int, int] = field(default_factory=dict)
    calls: int = 0


@dataclass(eq=False, slots=True)
class Try:
    """One attempt in flight: on which backend, since when, within which deadline."""

    member: Member
    started: float
    deadline: Deadline
    number: int
    generation: int  # of the member's breaker when this attempt was admitted


class AsyncRouter:
    """The backends of one client, their breakers and balancers, and the policies."""

    def __init__(
        self,
        chain: list[list[BackendSpec]],
        transport: AsyncHTTPTransport,
        *,
        timeout: float | None = None,
        retry_policy: RetryPolicy | None = None,
        budget: RetryBudget | None = None,
        balancing: Strategy = "least_outstanding",
        breaker_factory: Callable[[], CircuitBreaker] | None = None,
        events: EventSink | None = None,
        hedge: float | Literal["p95"] | None = None,
        sleep: AsyncSleep = asleep,
        clock: Callable[[], float] = time.monotonic,
        state: AsyncStateStore | None = None,
        owns_state: bool = False,
    ) -> None:
        self.policy = retry_policy or RetryPolicy()
        if timeout is not None:
            from dataclasses import replace

            self.policy = replace(self.policy, total_timeout=timeout)
        # With a state store, breakers and the budget are shared; without one (the default)
        # the router holds the pure policy objects themselves and pays nothing for the option.
        self._state = state
        self._owns_state = owns_state
        local_budget = budget or RetryBudget(clock=clock)
        self.budget: RetryBudget | SharedBudget = (
            local_budget if state is None else state.budget(local_budget)
        )
        self.events = events or EventSink()
        self.hedge = hedge
        self._latencies: deque[float] = deque(maxlen=200)
        self._sleep = sleep
        self._clock = clock
        self._transport = transport
        self.members: list[Member] = []
        for group in chain:
            local_balancer = Balancer([spec.weight for spec in group], balancing)
            balancer = (
                local_balancer
                if state is None
                else state.balancer([spec.name for spec in group], local_balancer)
            )
            for index, spec in enumerate(group):
                backend = _make_backend(spec, transport)
                breaker = breaker_factory() if breaker_factory else CircuitBreaker(clock=clock)
                breaker._on_change = self._breaker_hook(backend.name)
                member = Member(
                    backend,
                    breaker if state is None else state.breaker(backend.name, breaker),
                    balancer,
                    index,
                )
                self.members.append(member)
        self._probed = [m for m in self.members if m.spec.health_interval]
        self._prober: Background | None = None
        # Background work (the health prober, the state store's subscriber) starts with the
        # first request, inside the event loop.
        self._background_pending = bool(self._probed) or state is not None
        self._closing = False
        self._groups: list[list[Member]] = []
        for member in self.members:
            if self._groups and self._groups[-1][0].balancer is member.balancer:
                self._groups[-1].append(member)
            else:
                self._groups.append([member])

    @property
    def backends(self) -> list[AsyncBackend]:
        return [m.backend for m in self.members]

    def _breaker_hook(self, name: str) -> Callable[[str, str], None]:
        def changed(old: str, new: str) -> None:
            self.events.emit(Event("breaker", name, detail=f"{old}->{new}"))

        return changed

    # -- active health probing (?health=10s) ----------------------------------------------------

    def _ensure_background(self) -> None:
        if self._closing:
            return
        if self._probed and self._prober is None:
            self._prober = aspawn(self._health_loop)
        if self._state is not None:
            self._state.start()
        self._background_pending = False

    async def _health_loop(self) -> None:
        # The first probe waits one interval: the first request is itself a check.
        start = self._clock()
        next_due = {id(m): start + (m.spec.health_interval or 10.0) for m in self._probed}
        while not self._closing:
            now = self._clock()
            for member in self._probed:
                if now >= next_due[id(member)]:
                    interval = member.spec.health_interval or 10.0
                    next_due[id(member)] = now + interval
                    await self.probe(member)
            await self._sleep(min(next_due.values()) - self._clock() if next_due else 1.0)

    async def probe(self, member: Member) -> bool:
        """Probe one backend now; an answer closes its breaker, a failure opens it."""
        interval = member.spec.health_interval or 10.0
        if self._state is not None and not await self._state.try_lock(
            f"health:{key_id(member.name)}", interval
        ):
            # Another process probes this backend this interval; its result reaches this
            # process as the shared breaker's state.
            return member.breaker.state != "open"
        try:
            await member.backend.health(Deadline(min(interval, 5.0), self._clock))
        except BackendError as exc:
            if member.breaker.state != "open":
                member.breaker.trip()
            self.events.emit(Event("failure", member.name, error=exc, detail="health probe"))
            return False
        if member.breaker.state != "closed":
            member.breaker.record_success()
        return True

    # -- planning -------------------------------------------------------------------------

    def _order(self) -> deque[Member]:
        order: deque[Member] = deque()
        for group in self._groups:
            if len(group) == 1:
                order.append(group[0])
            else:
                order.extend(group[i] for i in group[0].balancer.order())
        return order

    def _start(self, request: ChatRequest) -> Execution[object]:
        if self._background_pending:
            self._ensure_background()
        total = request.timeout if request.timeout is not None else self.policy.total_timeout
        self.budget.record_request()
        return Execution(
            request, Deadline(total, self._clock), self._order(), started=self._clock()
        )

    def now(self) -> float:
        """The router's clock."""
        return self._clock()

    def _elapsed(self, ex: Execution[object]) -> float:
        return self._clock() - ex.started

    def _give_up(self, ex: Execution[object], last: BaseException | None = None) -> BaseException:
        self.events.emit(Event("give_up", elapsed_s=self._elapsed(ex), error=last))
        failures = [a.error for a in ex.route.attempts if a.error is not None and not a.skipped]
        if failures and len({a.backend for a in ex.route.attempts}) == 1:
            # One backend (perhaps retried): its own typed error says it best.
            return failures[-1]
        if ex.deadline.expired() and last is None:
            timeout = BackendTimeoutError(
                f"total deadline of {self.policy.total_timeout} s passed", retryable=False
            )
            ex.route.attempts.append(Attempt("(deadline)", timeout, 0.0))
        return AllBackendsFailedError(ex.route.attempts)

    async def _next(self, ex: Execution[object]) -> Member:
        """The next backend to call: untried ones first, then retries after a wait."""
        while ex.pending:
            member = ex.pending.popleft()
            if member.breaker.allow():
                return member
            ex.skipped.append(member)
            wait = member.breaker.cooldown_remaining()
            error = BreakerOpenError(
                f"circuit breaker open ({wait:.1f} s left)", backend=member.name
            )
            ex.route.attempts.append(Attempt(member.name, error, 0.0, skipped=True))
            self.events.emit(Event("skip", member.name, elapsed_s=self._elapsed(ex), error=error))
        if ex.skipped and (ex.calls == 0 or self.budget.try_spend()):
            # Nothing healthy is left: rather than fail without a call, probe the open backend
            # whose cooldown ends first. The first such probe is free; later ones in the same
            # request spend the retry budget, so a full outage cannot multiply load.
            member = min(ex.skipped, key=lambda m: m.breaker.cooldown_remaining())
            ex.skipped.remove(member)
            if member.breaker.force_probe():  # a shared breaker: unless another process probes
                return member
        choice = self._retry_choice(ex)
        if choice is None:
            raise self._give_up(ex)
        member, wait = choice
        remaining = ex.deadline.remaining()
        if remaining is not None and wait >= remaining:
            raise self._give_up(ex)
        if not self.budget.try_spend():
            self.events.emit(Event("give_up", member.name, detail="retry budget exhausted"))
            raise self._give_up(ex)
        ex.retries[id(member)] = ex.retries.get(id(member), 0) + 1
        self.events.emit(
            Event(
                "retry", member.name, ex.calls + 1, self._elapsed(ex), detail=f"after {wait:.3f} s"
            )
        )
        if wait > 0:
            await self._sleep(wait)
        if ex.deadline.expired():
            raise self._give_up(ex)
        return member

    def _retry_choice(self, ex: Execution[object]) -> tuple[Member, float] | None:
        """Among the failed backends, the retryable one that can go soonest."""
        best: tuple[Member, float] | None = None
        seen: set[int] = set()
        for member, error in reversed(ex.failed):  # each backend's latest error
            if id(member) in seen:
                continue
            seen.add(id(member))
            policy = self.policy.with_max_retries(member.spec.max_retries)
            if ex.retries.get(id(member), 0) >= policy.max_retries:
                continue
            if not policy.is_retryable(error) or policy.asks_too_long(error):
                continue
            if member.breaker.state == "open":
                continue
            wait = policy.server_wait(error)
            if wait is None:
                wait = policy.backoff(ex.retries.get(id(member), 0) + 1)
            if best is None or wait < best[1]:
                best = (member, wait)
        return best

    def _failed(self, ex: Execution[object], t: Try, error: BackendError) -> None:
        """Record a failed attempt; raise when the request must stop here."""
        member = t.member
        self._record_failure(ex, t, error)
        ex.failed.append((member, error))
        if isinstance(error, ContextLengthError):
            # Only a backend that declares a larger context can take this prompt.
            floor = member.backend.max_context or 0
            ex.pending = deque(m for m in ex.pending if (m.backend.max_context or 0) > floor)
            ex.failed.pop()  # the same prompt will not fit on a retry either
            if not ex.pending:
                raise error
        elif not fails_over(error):
            raise error
        if ex.deadline.expired():
            raise self._give_up(ex, error)
        self.events.emit(Event("failover", member.name, t.number, self._elapsed(ex), error))

    def _unsupported(self, ex: Execution[object], t: Try, error: InvalidRequestError) -> None:
        """This backend cannot serve the request as asked (a capability it lacks, refused
        before sending): skip it, never drop the feature. Raise when no backend is left."""
        member = t.member
        member.balancer.finished(member.index, None)
        ex.calls -= 1  # nothing was sent
        ex.route.attempts.append(Attempt(member.name, error, 0.0, skipped=True))
        self.events.emit(Event("skip", member.name, t.number, self._elapsed(ex), error))
        if not ex.pending:
            tried = [a for a in ex.route.attempts if not a.skipped]
            if not tried:
                raise error
            raise self._give_up(ex)

    def _record_failure(self, ex: Execution[object], t: Try, error: BackendError) -> None:
        member = t.member
        member.balancer.finished(member.index, None)
        ex.route.attempts.append(Attempt(member.name, error, self._clock() - t.started))
        if isinstance(error, _UNHEALTHY):
            member.breaker.record_failure(t.generation)
        self.events.emit(Event("failure", member.name, t.number, self._elapsed(ex), error))

    def _begin(self, ex: Execution[object], member: Member) -> Try:
        ex.calls += 1
        member.balancer.started(member.index)
        if self.events.active:
            self.events.emit(Event("attempt_start", member.name, ex.calls, self._elapsed(ex)))
        deadline = ex.deadline.child(member.spec.timeouts.total)
        return Try(member, self._clock(), deadline, ex.calls, member.breaker.generation)

    def _succeeded(self, ex: Execution[object], t: Try) -> None:
        member = t.member
        latency = self._clock() - t.started
        member.balancer.finished(member.index, latency)
        ex.route.attempts.append(Attempt(member.name, None, latency))
        ex.route.backend = member.name
        member.breaker.record_success(t.generation)
        if self.events.active:
            self.events.emit(Event("success", member.name, t.number, self._elapsed(ex)))

    def cancelled(self, ex: Execution[object], t: Try) -> None:
        """A hedged attempt lost the race and was cancelled (not the backend's fault)."""
        t.member.balancer.finished(t.member.index, None)
        error = HedgeLostError("cancelled: another backend answered first", backend=t.member.name)
        ex.route.attempts.append(Attempt(t.member.name, error, self._clock() - t.started))

    # -- requests -------------------------------------------------------------------------

    async def chat(self, request: ChatRequest) -> ChatCompletion:
        if self.hedge is not None:
            return await ahedged_chat(self, request)
        ex = self._start(request)
        while True:
            member = await self._next(ex)
            t = self._begin(ex, member)
            try:
                completion = await member.backend.chat(request, t.deadline)
            except BackendError as exc:
                self._failed(ex, t, exc)
                continue
            except InvalidRequestError as exc:
                self._unsupported(ex, t, exc)
                continue
            self._succeeded(ex, t)
            self.observe_latency(self._clock() - t.started)
            completion.route = ex.route
            return completion

    async def open_stream(self, ex: Execution[object]) -> tuple[Try, AsyncChunkSource]:
        """Open the stream on the next backend that answers; failures move along the chain."""
        while True:
            member = await self._next(ex)
            t = self._begin(ex, member)
            try:
                source = await member.backend.chat_stream(ex.request, t.deadline)
            except BackendError as exc:
                self._failed(ex, t, exc)
                continue
            except InvalidRequestError as exc:
                self._unsupported(ex, t, exc)
                continue
            ex.route.backend = member.name
            return t, source

    async def stream(self, request: ChatRequest) -> AsyncStream:
        if self.hedge is not None:
            return await ahedged_stream(self, request)
        ex = self._start(request)
        t, source = await self.open_stream(ex)
        return AsyncStream(self, ex, t, source)

    def stream_failed(self, ex: Execution[object], t: Try, error: BackendError) -> None:
        """A stream broke before any content reached the caller: move along the chain."""
        ex.route.backend = ""
        self._failed(ex, t, error)

    def stream_failed_late(self, ex: Execution[object], t: Try, error: BackendError) -> None:
        """A stream broke after content reached the caller: record it; nothing is retried."""
        self._record_failure(ex, t, error)

    def stream_done(self, ex: Execution[object], t: Try) -> None:
        """A stream finished (or was closed by the caller)."""
        self._succeeded(ex, t)

    def observe_latency(self, seconds: float) -> None:
        """A time to first token (streams) or to the answer: feeds the hedging delay."""
        self._latencies.append(seconds)

    def hedge_delay(self) -> float:
        """How long to wait before hedging: fixed, or the p95 of recent latencies."""
        hedge = self.hedge
        if isinstance(hedge, (int, float)):
            return float(hedge)
        if len(self._latencies) < 20:
            return 1.0  # too few observations for a p95 yet
        ordered = sorted(self._latencies)
        return ordered[min(int(len(ordered) * 0.95), len(ordered) - 1)]

    # -- models ---------------------------------------------------------------------------

    async def list_models(self) -> ModelList:
        """The union of every reachable backend's models (first backend first)."""
        seen: dict[str, Model] = {}
        route = Route()
        for member in self.members:
            started = self._clock()
            try:
                models = await member.backend.list_models(Deadline(member.spec.timeouts.total))
            except BackendError as exc:
                route.attempts.append(Attempt(member.name, exc, self._clock() - started))
                continue
            route.attempts.append(Attempt(member.name, None, self._clock() - started))
            for model in models.data:
                seen.setdefault(model.id, model)
        if not seen and route.attempts:
            errors = [a.error for a in route.attempts if a.error is not None]
            raise errors[0] if len(errors) == 1 else AllBackendsFailedError(route.attempts)
        result = ModelList(object="list", data=list(seen.values()))
        result.route = route
        return result

    async def aclose(self) -> None:
        self._closing = True
        if self._prober is not None:
            self._prober.cancel()
            self._prober = None
        for member in self.members:
            await member.backend.aclose()
        await self._transport.aclose()
        if self._state is not None and self._owns_state:
            await self._state.aclose()

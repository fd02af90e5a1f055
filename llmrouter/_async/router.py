"""Runs a request along the backend chain: a short driver over :mod:`llmrouter.execution`.

Every decision (which backend next, does this error fail over, may it be retried and after how
long, is its breaker open, is there budget, when to give up) is made by the sans-IO execution
module; this module performs its steps (calls a backend, sleeps, raises) and owns what needs
I/O: the backends themselves, the health prober and the state store.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Literal

from llmrouter import execution
from llmrouter._async.function_backend import AsyncFunctionBackend
from llmrouter._async.http_backend import AsyncHTTPBackend
from llmrouter._async.stream import AsyncStream
from llmrouter._concurrency import AsyncSleep, Background, asleep, aspawn

# if async
from llmrouter._hedge import ahedged_chat, ahedged_stream

# endif
from llmrouter._http import AsyncHTTPTransport
from llmrouter._request import ChatRequest
from llmrouter.backends import registry
from llmrouter.backends.interfaces import AsyncChunkSource, AsyncEngine
from llmrouter.config import BackendSpec
from llmrouter.errors import AllBackendsFailedError, BackendError, InvalidRequestError
from llmrouter.events import Event, EventSink
from llmrouter.execution import Call, Wait, abandoned, next_step, record
from llmrouter.policy import Balancer, CircuitBreaker, Deadline, RetryBudget, RetryPolicy, Strategy
from llmrouter.route import Attempt, Route
from llmrouter.state import AsyncStateStore, key_id
from llmrouter.types import ChatCompletion, Model, ModelList

if TYPE_CHECKING:
    from llmrouter.state.shared import SharedBudget

__all__ = ["AsyncBackend", "AsyncRouter", "Execution", "Member", "Try"]

AsyncBackend = AsyncHTTPBackend | AsyncEngine
Member = execution.Member[AsyncBackend]
Try = execution.Try[AsyncBackend]
Execution = execution.Execution[AsyncBackend]


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
        # if async
        hedge: float | Literal["p95"] | None = None,
        # endif
        sleep: AsyncSleep = asleep,
        clock: Callable[[], float] = time.monotonic,
        state: AsyncStateStore | None = None,
        owns_state: bool = False,
    ) -> None:
        self.policy = retry_policy or RetryPolicy()
        #: Set by :meth:`aclose`: the clients refuse calls from then on.
        self.closed = False
        if timeout is not None:
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
        # if async
        self.hedge = hedge
        self._latencies: deque[float] = deque(maxlen=200)
        # endif
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

    def start(self, request: ChatRequest) -> Execution:
        """A new execution of ``request`` over the chain, in the balancers' current order."""
        if self._background_pending:
            self._ensure_background()
        return execution.start(
            request,
            self._order(),
            policy=self.policy,
            budget=self.budget,
            events=self.events,
            clock=self._clock,
        )

    def now(self) -> float:
        """The router's clock."""
        return self._clock()

    async def next_call(self, ex: Execution) -> Try:
        """Perform the execution's steps up to its next call: sleep when it says to wait,
        raise when it gives up."""
        while True:
            step = next_step(ex)
            if isinstance(step, Call):
                return step.attempt
            if isinstance(step, Wait):
                await self._sleep(step.seconds)
            else:
                raise step.error

    # -- requests -------------------------------------------------------------------------

    async def chat(self, request: ChatRequest) -> ChatCompletion:
        # if async
        if self.hedge is not None:
            return await ahedged_chat(self, request)
        # endif
        ex = self.start(request)
        while True:
            t = await self.next_call(ex)
            try:
                completion = await t.member.backend.chat(request, t.deadline)
            except (BackendError, InvalidRequestError) as exc:
                record(ex, t, exc)
                continue
            except BaseException:
                abandoned(ex, t)
                raise
            record(ex, t, response=completion)
            # if async
            self.observe_latency(self._clock() - t.started)
            # endif
            completion.route = ex.route
            return completion

    async def open_stream(self, ex: Execution) -> tuple[Try, AsyncChunkSource]:
        """Open the stream on the next backend that answers; failures move along the chain."""
        while True:
            t = await self.next_call(ex)
            try:
                source = await t.member.backend.chat_stream(ex.request, t.deadline)
            except (BackendError, InvalidRequestError) as exc:
                record(ex, t, exc)
                continue
            except BaseException:
                abandoned(ex, t)
                raise
            ex.route.backend = t.member.name
            return t, source

    async def stream(self, request: ChatRequest) -> AsyncStream:
        # if async
        if self.hedge is not None:
            return await ahedged_stream(self, request)
        # endif
        ex = self.start(request)
        t, source = await self.open_stream(ex)
        return AsyncStream(self, ex, t, source)

    # if async
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

    # endif
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
        self.closed = True
        if self._prober is not None:
            self._prober.cancel()
            self._prober = None
        for member in self.members:
            await member.backend.aclose()
        await self._transport.aclose()
        if self._state is not None and self._owns_state:
            await self._state.aclose()

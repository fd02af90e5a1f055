"""AsyncClient: the OpenAI SDK's call shape over a chain of backends."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, Literal, overload

from typing_extensions import Unpack

from llmrouter._async.router import AsyncRouter
from llmrouter._async.stream import AsyncStream

# if async
from llmrouter._hedge import acheck_hedge

# endif
from llmrouter._http import AsyncHTTPTransport
from llmrouter._request import CreateParams, ParseParams, build_request
from llmrouter._structured import parse_completion, response_format_for
from llmrouter.config import BackendSpec, resolve_chain
from llmrouter.errors import ConfigError
from llmrouter.events import Event, EventSink
from llmrouter.policy import CircuitBreaker, RetryBudget, RetryPolicy, Strategy
from llmrouter.state import AsyncStateStore, MemoryState, aopen_state
from llmrouter.types import ChatCompletion, ModelList

__all__ = ["AsyncClient"]


class AsyncCompletions:
    """``client.chat.completions``."""

    def __init__(self, router: AsyncRouter) -> None:
        self._router = router

    @overload
    async def create(
        self,
        *,
        messages: Iterable[Any],
        stream: Literal[False] = False,
        **kwargs: Unpack[CreateParams],
    ) -> ChatCompletion: ...

    @overload
    async def create(
        self, *, messages: Iterable[Any], stream: Literal[True], **kwargs: Unpack[CreateParams]
    ) -> AsyncStream: ...

    @overload
    async def create(
        self, *, messages: Iterable[Any], stream: bool, **kwargs: Unpack[CreateParams]
    ) -> ChatCompletion | AsyncStream: ...

    async def create(
        self, *, messages: Iterable[Any], stream: bool = False, **kwargs: Unpack[CreateParams]
    ) -> ChatCompletion | AsyncStream:
        """Create a chat completion, as ``openai.AsyncOpenAI().chat.completions.create``.

        Args:
            messages: the conversation, as OpenAI message dicts.
            stream: return an :class:`AsyncStream` of chunks instead of one response.
            **kwargs: the OpenAI parameters (``model``, ``temperature``, ``max_tokens``, ``tools``,
                ``response_format``, ...), plus ``extra_body`` (engine-specific fields),
                ``extra_headers`` and ``timeout`` (total seconds, failover included).

        Raises:
            InvalidRequestError: the request is malformed (nothing was sent).
            BackendError: the one backend failed (a subclass says how).
            AllBackendsFailedError: every backend of a chain failed.
        """
        request = build_request(messages, stream, kwargs)
        if stream:
            return await self._router.stream(request)
        return await self._router.chat(request)

    async def parse(
        self, *, messages: Iterable[Any], response_format: Any, **kwargs: Unpack[ParseParams]
    ) -> ChatCompletion:
        """Like :meth:`create`, with ``response_format`` a pydantic model class.

        The model's JSON schema constrains the output on every backend that can constrain it;
        ``choices[i].message.parsed`` is the validated instance.

        Raises:
            OutputParseError: the output does not validate (``.raw`` holds the text).
        """
        request = build_request(
            messages, False, {**kwargs, "response_format": response_format_for(response_format)}
        )
        completion = await self._router.chat(request)
        parse_completion(completion, response_format)
        return completion


class AsyncChat:
    """``client.chat``."""

    def __init__(self, router: AsyncRouter) -> None:
        self.completions = AsyncCompletions(router)


class AsyncModels:
    """``client.models``."""

    def __init__(self, router: AsyncRouter) -> None:
        self._router = router

    async def list(self) -> ModelList:
        """The models every reachable backend serves (``GET /v1/models``, merged)."""
        return await self._router.list_models()


class AsyncClient:
    """An OpenAI-shaped async client over one backend or a failover chain.

    Args:
        url: backend URLs, comma-separated in failover order (``"vllm://a:8000, openai://"``).
            Default: ``LLMROUTER_URL``, else ``OPENAI_BASE_URL``, else the embedded model.
        backends: the same as a list of URLs or :class:`BackendSpec` values.
        timeout: total deadline of a request in seconds, retries and failover included
            (default: the retry policy's, 60 s).
        retry_policy: when and how long to retry (default :class:`RetryPolicy`; use
            ``RetryPolicy.testing()`` in tests for zero waits).
        retry_budget: the cap on retries across this client (default 20 % of recent requests
            plus 10 per second).
        balancing: how replicas of a ``|`` group share load: ``"least_outstanding"``
            (default), ``"round_robin"`` or ``"latency"``.
        circuit_breaker: makes each backend's breaker (default ``CircuitBreaker()``: open
            after 5 consecutive failures or a 50 % failure rate over 20 calls, 30 s cooldown).
        on_event: called with every :class:`~llmrouter.events.Event` (attempts, retries,
            failovers, breaker changes); must be quick and must not raise.
        hedge: send the request to the next backend too when the first has not answered
            (for a stream: produced content) after this many seconds, or after the p95 of
            recent times to first token with ``"p95"``; the first answer wins, the other is
            cancelled. Async only; spends the retry budget.
        transport: the HTTP transport (default: aiohttp; ``HttpxAsyncTransport`` for httpx2).
        state: where breaker, health and retry-budget state lives: ``"redis://host:6379/0"``
            (shared by every client using it, across processes and machines; needs
            ``llmrouter[redis]``), a state store object, or ``"memory://"``. Default:
            ``LLMROUTER_STATE``, else in-process memory. See ``docs/scale-out.md``.

    Raises:
        ConfigError: a URL, variable or argument is wrong, or nothing is configured.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        backends: Sequence[str | BackendSpec] | None = None,
        timeout: float | None = None,
        retry_policy: RetryPolicy | None = None,
        retry_budget: RetryBudget | None = None,
        balancing: Strategy = "least_outstanding",
        circuit_breaker: Callable[[], CircuitBreaker] | None = None,
        on_event: Callable[[Event], None] | None = None,
        # if async
        hedge: float | Literal["p95"] | None = None,
        # endif
        transport: AsyncHTTPTransport | None = None,
        state: str | AsyncStateStore | MemoryState | None = None,
    ) -> None:
        if url is not None and backends is not None:
            raise ConfigError("give either url or backends, not both")
        if timeout is not None and (isinstance(timeout, bool) or timeout <= 0):
            raise ConfigError(f"timeout: expected a positive number of seconds, got {timeout!r}")
        # if async
        acheck_hedge(hedge)
        # endif
        chain = resolve_chain(backends if backends is not None else url)
        self.backends: list[BackendSpec] = [spec for group in chain for spec in group]
        if balancing not in ("least_outstanding", "round_robin", "latency"):
            raise ConfigError(
                f"balancing={balancing!r}: expected 'least_outstanding', 'round_robin' or 'latency'"
            )
        store = aopen_state(state)
        self._router = AsyncRouter(
            chain,
            transport or AsyncHTTPTransport(),
            timeout=timeout,
            retry_policy=retry_policy,
            budget=retry_budget,
            balancing=balancing,
            breaker_factory=circuit_breaker,
            events=EventSink(on_event),
            # if async
            hedge=hedge,
            # endif
            state=store,
            owns_state=store is not None and not isinstance(state, AsyncStateStore),
        )
        self.chat = AsyncChat(self._router)
        self.models = AsyncModels(self._router)

    async def aclose(self) -> None:
        """Release connections and in-process models."""
        await self._router.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        names = ", ".join(spec.name for spec in self.backends)
        return f"{type(self).__name__}({names!r})"

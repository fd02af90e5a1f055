"""AsyncClient: the OpenAI SDK's call shape over a chain of backends."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, overload

from typing_extensions import Unpack

from llmrouter._async.raw import AsyncRawResponse, entered
from llmrouter._async.router import AsyncRouter
from llmrouter._async.stream import AsyncStream

# if async
from llmrouter._hedge import acheck_hedge

# endif
from llmrouter._http import AsyncHTTPTransport
from llmrouter._options import CallDefaults, call_defaults, client_chain
from llmrouter._request import ChatRequest, CreateParams, ParseParams, build_request
from llmrouter._structured import parse_completion, response_format_for
from llmrouter._telemetry import client_sink
from llmrouter.config import BackendSpec
from llmrouter.errors import (
    ClientClosedError,
    ConfigError,
    InvalidRequestError,
    NotFoundError,
)
from llmrouter.events import Event, Subscriber
from llmrouter.policy import CircuitBreaker, RetryBudget, RetryPolicy, Strategy
from llmrouter.state import AsyncStateStore, MemoryState, aopen_state
from llmrouter.types import ChatCompletion, Model, ModelList

if TYPE_CHECKING:
    from llmrouter._async.embeddings import AsyncEmbeddings

__all__ = ["AsyncClient"]

# with_options changes that a copy can carry per call, sharing the backends.
_SHARED_OPTIONS = frozenset({"timeout", "max_retries", "default_headers", "default_query"})


class AsyncCompletions:
    """``client.chat.completions``."""

    def __init__(self, router: AsyncRouter, defaults: CallDefaults) -> None:
        self._router = router
        self._defaults = defaults

    @property
    def with_raw_response(self) -> AsyncRawCompletions:
        """``create`` returning an :class:`~llmrouter._async.raw.AsyncRawResponse`: the status,
        headers and raw body of the attempt that served, and ``parse()`` for the response."""
        return AsyncRawCompletions(self)

    @property
    def with_streaming_response(self) -> AsyncStreamingCompletions:
        """``create`` as a context manager entering an
        :class:`~llmrouter._async.raw.AsyncStreamedResponse` (``iter_lines()``...)."""
        return AsyncStreamingCompletions(self)

    def _request(self, messages: Iterable[Any], stream: bool, kwargs: Any) -> ChatRequest:
        if self._router.closed:
            raise _closed()
        request = build_request(messages, stream, kwargs)
        return request if self._defaults.empty else self._defaults.apply(request)

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
        request = self._request(messages, stream, kwargs)
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
        request = self._request(
            messages, False, {**kwargs, "response_format": response_format_for(response_format)}
        )
        completion = await self._router.chat(request)
        parse_completion(completion, response_format)
        return completion


class AsyncRawCompletions:
    """``client.chat.completions.with_raw_response``."""

    def __init__(self, completions: AsyncCompletions) -> None:
        self._completions = completions

    async def create(self, *, messages: Iterable[Any], **kwargs: Any) -> AsyncRawResponse:
        """:meth:`AsyncCompletions.create`, returning the raw response around its result."""
        return AsyncRawResponse(await self._completions.create(messages=messages, **kwargs))


class AsyncStreamingCompletions:
    """``client.chat.completions.with_streaming_response``."""

    def __init__(self, completions: AsyncCompletions) -> None:
        self._completions = completions

    def create(self, *, messages: Iterable[Any], **kwargs: Any) -> Any:
        """:meth:`AsyncCompletions.create` as a context manager (``with ... as response``)."""
        return entered(lambda: self._completions.create(messages=messages, **kwargs))


class AsyncChat:
    """``client.chat``."""

    def __init__(self, router: AsyncRouter, defaults: CallDefaults) -> None:
        self.completions = AsyncCompletions(router, defaults)


class AsyncModels:
    """``client.models``."""

    def __init__(self, router: AsyncRouter) -> None:
        self._router = router

    async def list(self) -> ModelList:
        """The models every reachable backend serves (``GET /v1/models``, merged)."""
        if self._router.closed:
            raise _closed()
        return await self._router.list_models()

    async def retrieve(self, model: str) -> Model:
        """The model named ``model``, from the backends' lists.

        Raises:
            NotFoundError: no backend serves it (the message lists what they serve).
        """
        if not isinstance(model, str) or not model:
            raise InvalidRequestError(
                f"model: expected a non-empty string, got {model!r}", param="model"
            )
        models = await self.list()
        for entry in models.data:
            if entry.id == model:
                return entry
        served = ", ".join(m.id for m in models.data[:10]) or "none"
        raise NotFoundError(
            f"The model '{model}' does not exist (served: {served})",
            status_code=404,
            body={"error": {"message": f"The model '{model}' does not exist", "code": None}},
            error_type="invalid_request_error",
        )


def _closed() -> ClientClosedError:
    return ClientClosedError("the client has been closed", retryable=False)


class AsyncClient:
    """An OpenAI-shaped async client over one backend or a failover chain.

    The openai SDK's constructor arguments mean what they mean there (``docs/migrating.md``
    has the table); ``url``/``backends`` and what follows ``default_query`` are llmrouter's.

    Args:
        url: backend URLs, comma-separated in failover order (``"vllm://a:8000, openai://"``).
            Default: ``LLMROUTER_URL``, else ``OPENAI_BASE_URL``, else the embedded model.
        backends: the same as a list of URLs or :class:`BackendSpec` values.
        api_key: the key (default ``OPENAI_API_KEY``) of the ``base_url`` server, or of the one
            backend of ``url``; held like an environment key: never shown.
        base_url: one OpenAI-compatible server (default ``OPENAI_BASE_URL``); not with ``url``.
        organization: sent as ``OpenAI-Organization`` (default ``OPENAI_ORG_ID``).
        project: sent as ``OpenAI-Project`` (default ``OPENAI_PROJECT_ID``).
        timeout: seconds: the total deadline of a call, retries and failover included
            (default: the retry policy's, 60 s); an ``httpx.Timeout``: its ``connect`` and
            ``read`` limit each attempt.
        max_retries: retries per backend (default 2, as in the SDK).
        default_headers: headers sent with every call.
        default_query: query parameters added to every call's URL (HTTP backends).
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
        telemetry: OpenTelemetry spans and metrics for every request (``llmrouter[otel]``):
            ``True`` for the global providers, a :class:`llmrouter.otel.Telemetry` for given
            ones, ``False`` for none. Default: on when ``LLMROUTER_OTEL=1``. See
            ``docs/telemetry.md``.
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
        api_key: str | None = None,
        base_url: str | None = None,
        organization: str | None = None,
        project: str | None = None,
        timeout: float | Any | None = None,
        max_retries: int | None = None,
        default_headers: Mapping[str, str] | None = None,
        default_query: Mapping[str, object] | None = None,
        retry_policy: RetryPolicy | None = None,
        retry_budget: RetryBudget | None = None,
        balancing: Strategy = "least_outstanding",
        circuit_breaker: Callable[[], CircuitBreaker] | None = None,
        on_event: Callable[[Event], None] | None = None,
        telemetry: bool | Subscriber | None = None,
        # if async
        hedge: float | Literal["p95"] | None = None,
        # endif
        transport: AsyncHTTPTransport | None = None,
        state: str | AsyncStateStore | MemoryState | None = None,
    ) -> None:
        # Kept for with_options (never shown: the key is in it).
        self._args: dict[str, Any] = {
            k: v for k, v in locals().items() if k not in ("self", "__class__")
        }
        defaults = call_defaults(
            timeout=timeout,
            max_retries=max_retries,
            default_headers=default_headers,
            default_query=default_query,
        )
        # if async
        acheck_hedge(hedge)
        # endif
        chain = client_chain(
            url,
            backends,
            api_key=api_key,
            base_url=base_url,
            organization=organization,
            project=project,
        )
        self.backends: list[BackendSpec] = [spec for group in chain for spec in group]
        if balancing not in ("least_outstanding", "round_robin", "latency"):
            raise ConfigError(
                f"balancing={balancing!r}: expected 'least_outstanding', 'round_robin' or 'latency'"
            )
        store = aopen_state(state)
        self._router = AsyncRouter(
            chain,
            transport or AsyncHTTPTransport(),
            timeout=defaults.timeout,
            retry_policy=retry_policy,
            budget=retry_budget,
            balancing=balancing,
            breaker_factory=circuit_breaker,
            events=client_sink(on_event, telemetry),
            # if async
            hedge=hedge,
            # endif
            state=store,
            owns_state=store is not None and not isinstance(state, AsyncStateStore),
        )
        self._set_up(self._router, replace(defaults, timeout=None))

    def _set_up(self, router: AsyncRouter, defaults: CallDefaults) -> None:
        self._defaults = defaults
        self.chat = AsyncChat(router, defaults)
        self.models = AsyncModels(router)
        self._calls = router
        self._embeddings: AsyncEmbeddings | None = None

    @property
    def embeddings(self) -> AsyncEmbeddings:
        """``client.embeddings`` (loaded on first use, so chat-only code never imports it)."""
        if self._embeddings is None:
            from llmrouter._async.embeddings import AsyncEmbeddings

            self._embeddings = AsyncEmbeddings(self._calls, self._defaults)
        return self._embeddings

    def is_closed(self) -> bool:
        """Whether :meth:`close` was called (then every call fails, as in the openai SDK)."""
        return self._router.closed

    def with_options(self, **changes: Any) -> AsyncClient:
        """A copy of this client with some constructor arguments changed, as in the openai SDK
        (``client.with_options(timeout=5.0, max_retries=0).chat.completions.create(...)``).

        A copy that changes only ``timeout``, ``max_retries`` and ``default_headers`` (merged
        with this client's) or ``default_query`` shares this client's backends: connections,
        breakers and loaded models; closing either closes both. Other changes (``api_key``,
        ``base_url``, ``url``...) make a new client with its own.
        """
        unknown = sorted(set(changes) - set(self._args))
        if unknown:
            raise TypeError(f"with_options() got unexpected keyword argument(s): {unknown}")
        if "default_headers" in changes and changes["default_headers"] is not None:
            merged = dict(self._args.get("default_headers") or {})
            merged.update(changes["default_headers"])
            changes["default_headers"] = merged
        args = {**self._args, **changes}
        if set(changes) <= _SHARED_OPTIONS:
            copy = object.__new__(type(self))
            copy.__dict__.update(self.__dict__)
            copy._args = args
            defaults = call_defaults(
                timeout=args["timeout"],
                max_retries=args["max_retries"],
                default_headers=args["default_headers"],
                default_query=args["default_query"],
            )
            copy._set_up(self._router, defaults)
            return copy
        return type(self)(**args)

    copy = with_options

    async def close(self) -> None:
        """Release connections and in-process models; calls made after it fail."""
        await self._router.aclose()

    # if async
    aclose = close
    # endif

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        names = ", ".join(spec.name for spec in self.backends)
        return f"{type(self).__name__}({names!r})"

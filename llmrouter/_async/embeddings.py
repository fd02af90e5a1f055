"""``client.embeddings``: drives embeddings requests over the chain.

A call is validated (``llmrouter._embed``), its backends are narrowed to the request's embedding
space (failover never mixes vector spaces), its input is split to the tightest limit among
those backends, and every part runs as its own request through :mod:`llmrouter.execution`, so
retries, breakers, the deadline, the retry budget and hedging apply exactly as for chat. Parts
run concurrently on ``AsyncClient`` (at most :data:`MAX_CONCURRENT_PARTS` at once), in turn
on ``Client``; the answer keeps the input order and sums the usage. One failed part fails
the call with :class:`~llmrouter.embeddings.EmbeddingBatchError` naming it.
"""

from __future__ import annotations

# if async
import asyncio

# endif
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from llmrouter import execution
from llmrouter._async.http_backend import AsyncHTTPBackend
from llmrouter._async.router import AsyncBackend, AsyncRouter, Member, Try
from llmrouter._embed import (
    EmbeddingRequest,
    Space,
    build_embedding_request,
    check_answer,
    check_for_backend,
    finish,
    merge,
    plan_space,
    split,
)

# if async
from llmrouter._hedge import _race

# endif
from llmrouter._options import CallDefaults
from llmrouter.backends import registry
from llmrouter.embeddings import (
    CreateEmbeddingResponse,
    EmbeddingBatchError,
    EmbeddingSpaceError,
    EmbedLimits,
)
from llmrouter.errors import (
    AllBackendsFailedError,
    BackendConnectionError,
    BackendError,
    ConfigError,
    InvalidRequestError,
    LLMRouterError,
)
from llmrouter.execution import record
from llmrouter.policy import Deadline

__all__ = ["MAX_CONCURRENT_PARTS", "AsyncEmbeddings"]

#: Parts of one split call in flight at once (``AsyncClient``).
MAX_CONCURRENT_PARTS = 8


@dataclass(slots=True)
class _Embedder:
    """How one member embeds: its codec (HTTP) or the engine itself, and its limits."""

    codec: Any  # the embeddings codec of an HTTP backend; None for an engine
    limits: EmbedLimits


def _embedder(backend: AsyncBackend) -> _Embedder | None:
    """``None`` for a backend that cannot embed (skipped by embeddings requests)."""
    spec = backend.spec
    if spec.instance is not None or not isinstance(backend, AsyncHTTPBackend):
        if not callable(getattr(backend, "embed", None)):
            return None
        if spec.instance is None and not registry.declaration(spec.scheme).embeddings:
            return None
        limits = getattr(backend, "embed_limits", None)
        return _Embedder(None, limits if isinstance(limits, EmbedLimits) else EmbedLimits())
    try:
        codec = registry.embeddings_codec_of(registry.declaration(spec.scheme))
    except ConfigError:
        return None
    if codec is None:
        return None
    return _Embedder(codec, codec.embed_limits(spec))


def _limited(limits: EmbedLimits, spec: Any) -> EmbedLimits:
    batch = getattr(spec, "embed_batch", None)
    if batch is None or batch >= limits.max_inputs:
        return limits
    return EmbedLimits(
        batch, limits.max_tokens, limits.token_arrays, limits.empty_strings, limits.base64
    )


class AsyncEmbeddings:
    """``client.embeddings``."""

    def __init__(self, router: AsyncRouter, defaults: CallDefaults) -> None:
        self._router = router
        self._defaults = defaults
        self._embedders: list[_Embedder | None] | None = None
        self._positions: dict[int, int] | None = None

    async def create(
        self,
        *,
        input: str | Iterable[str] | Iterable[int] | Iterable[Iterable[int]],
        model: str | None = None,
        dimensions: int | None = None,
        encoding_format: str | None = None,
        user: str | None = None,
        **kwargs: Any,
    ) -> CreateEmbeddingResponse:
        """Embed ``input``, shaped exactly like the openai SDK's ``embeddings.create``.

        Args:
            input: a string, a list of strings, a list of token ids, or a list of such lists
                (token ids where the backend takes them). Lists longer than a backend's limit
                are split and sent in parts.
            model: the embedding model (default: the backend's ``?model=``, else the one the
                server serves).
            dimensions: the vector size, for models that can shorten theirs.
            encoding_format: ``"float"`` (default) or ``"base64"`` (the vectors as base64
                text of little-endian float32, as the openai SDK returns them when asked).
            user: OpenAI's end-user id.
            **kwargs: ``extra_headers``, ``extra_query``, ``extra_body``, ``timeout``.

        Returns:
            A :class:`~llmrouter.embeddings.CreateEmbeddingResponse`; ``resp.route`` says
            which backend(s) served it.

        Raises:
            InvalidRequestError: bad input (an empty list, a wrong type, ``dimensions`` < 1),
                before anything is sent; or no backend of the chain embeds.
            EmbeddingSpaceError: the backends of the request's embedding space failed, and
                the others serve another model.
            EmbeddingBatchError: one part of a split call failed (which one, and why).
            BackendError: the one backend failed (a subclass says how).
        """
        if self._router.closed:
            raise BackendConnectionError("the client has been closed", retryable=False)
        request = build_embedding_request(
            input,
            {
                "model": model,
                "dimensions": dimensions,
                "encoding_format": encoding_format,
                "user": user,
                **kwargs,
            },
        )
        if not self._defaults.empty:
            self._defaults.apply(request)
        return await self.run(request)

    # -- the driver -----------------------------------------------------------------------

    def _index(self) -> dict[int, int]:
        if self._positions is None:
            self._positions = {id(m): i for i, m in enumerate(self._router.members)}
        return self._positions

    def _members(self) -> list[_Embedder | None]:
        if self._embedders is None:
            self._embedders = [_embedder(m.backend) for m in self._router.members]
        return self._embedders

    def _space(self, request: EmbeddingRequest) -> Space:
        index = self._index()
        groups = [[(index[id(m)], m.spec) for m in group] for group in self._router._groups]
        embedders = self._members()
        return plan_space(groups, [e is not None for e in embedders], request.model)

    async def run(self, request: EmbeddingRequest) -> CreateEmbeddingResponse:
        """Run a validated request: plan the space, split, run the parts, merge."""
        space = self._space(request)
        embedders = self._members()
        members = self._router.members
        limits = [_limited(e.limits, members[i].spec) for i in space.allowed if (e := embedders[i])]
        tokens = [x.max_tokens for x in limits if x.max_tokens is not None]
        tightest = EmbedLimits(
            max_inputs=min(x.max_inputs for x in limits), max_tokens=min(tokens, default=None)
        )
        parts = split(request, tightest)
        allowed = {id(members[i]) for i in space.allowed}
        # if async
        if len(parts) > 1:
            return merge(await self._gather(parts, allowed, space))
        # endif
        results = []
        for i, part in enumerate(parts):
            try:
                results.append(await self._run_part(part, allowed, space))
            except LLMRouterError as exc:
                if len(parts) == 1:
                    raise
                stop = part.offset + len(part.input)
                raise EmbeddingBatchError(i, len(parts), part.offset, stop, exc) from exc
        return merge(results)

    # if async
    async def _gather(
        self, parts: list[EmbeddingRequest], allowed: set[int], space: Space
    ) -> list[CreateEmbeddingResponse]:
        """The parts, at most MAX_CONCURRENT_PARTS at once; the first failure cancels the rest."""
        gate = asyncio.Semaphore(MAX_CONCURRENT_PARTS)

        async def one(part: EmbeddingRequest) -> CreateEmbeddingResponse:
            async with gate:
                return await self._run_part(part, allowed, space)

        tasks = [asyncio.ensure_future(one(part)) for part in parts]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in tasks:
                if not task.done():
                    task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for i, task in enumerate(tasks):
            error = None if task.cancelled() else task.exception()
            if error is None:
                continue
            if not isinstance(error, LLMRouterError):
                raise error
            part = parts[i]
            stop = part.offset + len(part.input)
            raise EmbeddingBatchError(i, len(parts), part.offset, stop, error) from error
        return [task.result() for task in tasks]

    # endif
    async def _run_part(
        self, request: EmbeddingRequest, allowed: set[int], space: Space
    ) -> CreateEmbeddingResponse:
        router = self._router
        if router._background_pending:
            router._ensure_background()
        order: deque[Member] = deque(m for m in router._order() if id(m) in allowed)
        ex = execution.start(
            request,
            order,
            policy=router.policy,
            budget=router.budget,
            events=router.events,
            clock=router.now,
        )
        try:
            # if async
            if router.hedge is not None:
                t, response = await _race(router, ex, lambda t: self._call(t, request))
                record(ex, t)
                response.route = ex.route
                return response
            # endif
            while True:
                t = await router.next_call(ex)
                try:
                    response = await self._call(t, request)
                except (BackendError, InvalidRequestError) as exc:
                    record(ex, t, exc)
                    continue
                except BaseException:
                    execution.abandoned(ex, t)
                    raise
                record(ex, t)
                response.route = ex.route
                return response
        except (BackendError, AllBackendsFailedError) as exc:
            if not space.refused or not _would_fail_over(exc):
                raise
            raise EmbeddingSpaceError(ex.route.attempts, space.refused, space.name) from exc

    async def _call(self, t: Try, request: EmbeddingRequest) -> CreateEmbeddingResponse:
        backend = t.member.backend
        embedder = self._members()[self._index()[id(t.member)]]
        if embedder is None:  # not reached: the space holds embedding backends only
            raise InvalidRequestError(f"{backend.name}: this backend does not embed")
        check_for_backend(request, _limited(embedder.limits, backend.spec), backend.name)
        if embedder.codec is None:
            response: CreateEmbeddingResponse = await backend.embed(request, t.deadline)  # type: ignore[union-attr]
        else:
            assert isinstance(backend, AsyncHTTPBackend)
            response = await _http_embed(backend, embedder.codec, request, t.deadline)
        check_answer(response, request)
        finish(response, request)
        return response


def _would_fail_over(error: BaseException) -> bool:
    """Whether another backend would have been tried had it been in the space."""
    if isinstance(error, AllBackendsFailedError):
        return True
    return execution.fails_over(error)


async def _http_embed(
    backend: AsyncHTTPBackend, codec: Any, request: EmbeddingRequest, deadline: Deadline
) -> CreateEmbeddingResponse:
    """One embeddings request over HTTP, with the chat path's discovery, timeouts, error
    mapping and secret scrubbing (``AsyncHTTPBackend``'s own steps)."""
    http = None
    try:
        model = await backend._model(request, deadline)
        await backend._prepare()
        http = codec.build_embed(backend.spec, request, model)
        response = await backend._send(backend._timed(http, deadline, request))
        body = await response.aread()
        result: CreateEmbeddingResponse = codec.parse_embed(
            backend.spec, request, response.headers, body
        )
    except LLMRouterError as exc:
        backend._scrubbed(exc, http)
        raise
    return result

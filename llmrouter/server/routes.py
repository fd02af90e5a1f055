"""The gateway's HTTP handlers: chat completions, models, health, readiness, metrics.

``POST /v1/chat/completions`` goes, in order: draining? (503), the bearer key (401), the
key's requests in flight (429), the per-key request limit (429), the body (``intake``: size
413, time 408, nesting, JSON, Unicode, fields, message count and prompt size 400), the per-key
token limit (429), then the client. A client that disconnects cancels its request, backend
call included, and is logged as 499. ``/v1/*`` needs a key when keys are configured;
``/health``, ``/ready`` and ``/metrics`` never do (probes and scrapers), and say nothing secret.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

from aiohttp import web

from llmrouter.errors import LLMRouterError
from llmrouter.server.accesslog import AccessRecord
from llmrouter.server.intake import ChatBody, read_chat_body
from llmrouter.server.metrics import CONTENT_TYPE, GatewayMetrics
from llmrouter.server.passthrough import pump_raw, take_over
from llmrouter.server.ratelimit import (
    Denial,
    RateLimiter,
    SharedRateLimiter,
    estimate_prompt_tokens,
)
from llmrouter.server.responses import (
    GatewayError,
    error_body,
    from_exception,
    rate_limited,
    too_many_in_flight,
)
from llmrouter.server.settings import GatewaySettings
from llmrouter.server.streaming import SSE_HEADERS, StreamTally, encode, has_output, relay
from llmrouter.types import ChatCompletion

if TYPE_CHECKING:
    from llmrouter import AsyncClient
    from llmrouter._async.router import Member
    from llmrouter.route import Route
    from llmrouter.state import AsyncStateStore

__all__ = ["Gateway"]

logger = logging.getLogger("llmrouter.server")

CHAT = "/v1/chat/completions"
MODELS = "/v1/models"
_JSON = "application/json"


class Gateway:
    """The state the handlers share: the client, keys, limits, metrics, in-flight requests."""

    def __init__(
        self,
        settings: GatewaySettings,
        client: AsyncClient,
        metrics: GatewayMetrics,
        state: AsyncStateStore | None = None,
    ):
        self.settings = settings
        self.client = client
        self.metrics = metrics
        self.keys = settings.keys
        rpm, tpm = settings.requests_per_minute, settings.tokens_per_minute
        # Shared limits (LLMROUTER_STATE) hold across replicas; each decision is a round trip.
        self.limiter: RateLimiter | SharedRateLimiter = (
            RateLimiter(rpm, tpm) if state is None else SharedRateLimiter(state, rpm, tpm)
        )
        self.draining = False
        self.in_flight = 0
        self.idle = asyncio.Event()
        self.idle.set()
        self.streams: set[asyncio.Task[None]] = set()
        self.cut: set[asyncio.Task[None]] = set()
        self.key_in_flight: dict[str, int] = {}

    # -- backends -------------------------------------------------------------------------

    def members(self) -> list[Member]:
        # AsyncClient has no public view of its breakers yet (reported as a needed change).
        return list(self.client._router.members)

    def breaker_states(self) -> list[tuple[str, str]]:
        return [(m.name, m.breaker.state) for m in self.members()]

    def unusable_for(self) -> float | None:
        """Seconds until a backend may be tried again when every breaker is open, else None."""
        members = self.members()
        if not members or any(m.breaker.state != "open" for m in members):
            return None
        return min(m.breaker.cooldown_remaining() for m in members)

    # -- rate limits (in-process: plain calls; shared: one round trip each) ----------------

    async def _admit(self, key_id: str) -> Denial | None:
        limiter = self.limiter
        if isinstance(limiter, RateLimiter):
            return limiter.admit_request(key_id)
        return await limiter.admit_request(key_id)

    async def _reserve(self, key_id: str, estimate: int) -> tuple[int, Denial | None]:
        limiter = self.limiter
        if isinstance(limiter, RateLimiter):
            return limiter.reserve_tokens(key_id, estimate)
        return await limiter.reserve_tokens(key_id, estimate)

    async def _settle(self, key_id: str, reserved: int, used: int) -> None:
        limiter = self.limiter
        if isinstance(limiter, RateLimiter):
            limiter.settle_tokens(key_id, reserved, used)
        elif limiter.tokens_per_minute is not None and used != reserved:
            await limiter.settle_tokens(key_id, reserved, used)

    # -- request bookkeeping --------------------------------------------------------------

    def _begin(self, request: web.Request) -> AccessRecord:
        self.in_flight += 1
        self.idle.clear()
        self.metrics.in_flight.inc(())
        return AccessRecord(uuid.uuid4().hex, request.method, request.path)

    def _end(self, record: AccessRecord, path: str) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self.idle.set()
        m = self.metrics
        m.in_flight.inc((), -1)
        m.requests.inc((path, str(record.status)))
        m.latency.observe((path,), time.monotonic() - record.started)
        if record.error:
            m.errors.inc((path, record.error))
        record.emit(self.settings.log_content)

    def _error(self, err: GatewayError, record: AccessRecord) -> web.Response:
        record.status = err.status
        record.error = err.error_class or err.type
        headers = {**err.headers, "x-request-id": record.request_id}
        closing = self.draining or headers.pop("Connection", "") == "close"
        response = web.Response(
            status=err.status,
            body=err.body(debug=self.settings.debug),
            content_type=_JSON,
            headers=headers,
        )
        if closing:
            response.force_close()
        return response

    def _hold(self, key_id: str) -> None:
        """Count a request against its key's in-flight cap (429 over it)."""
        held = self.key_in_flight.get(key_id, 0)
        limit = self.settings.max_in_flight_per_key
        if limit is not None and held >= limit:
            self.metrics.rate_limited.inc(("in_flight",))
            raise too_many_in_flight(key_id, limit)
        self.key_in_flight[key_id] = held + 1

    def _release(self, key_id: str) -> None:
        held = self.key_in_flight.pop(key_id, 1) - 1
        if held > 0:
            self.key_in_flight[key_id] = held

    def _authenticate(self, request: web.Request) -> str:
        if self.draining:
            raise GatewayError(
                503,
                "the gateway is shutting down",
                "service_unavailable",
                code="shutting_down",
                error_class="ShuttingDown",
            )
        key_id = self.keys.identify(request.headers.get("Authorization"))
        if key_id is None:
            given = "Authorization" in request.headers
            raise GatewayError(
                401,
                "invalid API key"
                if given
                else "missing API key: send 'Authorization: Bearer <key>'",
                "authentication_error",
                code="invalid_api_key",
                headers={"WWW-Authenticate": 'Bearer realm="llmrouter"'},
                error_class="AuthenticationFailed",
            )
        return key_id

    def _upstream_error(self, exc: LLMRouterError, record: AccessRecord) -> GatewayError:
        wait = self.unusable_for()
        err = from_exception(exc, nothing_usable=wait is not None)
        if err.status == 503 and wait is not None:
            err.headers["Retry-After"] = str(max(1, round(wait)))
        if err.upstream:  # the backends' own words, secrets masked: for the operator only
            logger.info(
                "request %s: %d; backends said: %s",
                record.request_id,
                err.status,
                err.upstream[:4000],
            )
        return err

    def _account(self, record: AccessRecord, route: Route, prompt: int | None, out: int) -> None:
        record.backend = route.backend or None
        record.attempts = sum(1 for a in route.attempts if not a.skipped)
        record.prompt_tokens = prompt
        record.completion_tokens = out
        backend = route.backend
        for attempt in route.attempts:
            if attempt.error is None and not attempt.skipped:
                self.metrics.backend_latency.observe((attempt.backend,), attempt.duration_s)
        if backend:
            if prompt:
                self.metrics.tokens.inc((backend, "in"), prompt)
            if out:
                self.metrics.tokens.inc((backend, "out"), out)

    # -- handlers -------------------------------------------------------------------------

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        record = self._begin(request)
        held: str | None = None
        try:
            key_id = record.key_id = self._authenticate(request)
            self._hold(key_id)
            held = key_id
            return await self._chat(request, record, key_id)
        except GatewayError as err:
            return self._error(err, record)
        except asyncio.CancelledError:
            # The client went away (aiohttp cancels the handler, and with it the backend
            # call), or a shutdown cut a request that outlived the grace period.
            record.status = 503 if self.draining else 499  # nginx's "client closed request"
            record.error = "ShutdownCut" if self.draining else "ClientDisconnected"
            raise
        except Exception:
            logger.exception("request %s failed", record.request_id)
            return self._error(GatewayError(500, "internal error", "server_error"), record)
        finally:
            if held is not None:
                self._release(held)
            self._end(record, CHAT)

    async def _chat(
        self, request: web.Request, record: AccessRecord, key_id: str
    ) -> web.StreamResponse:
        denial = await self._admit(key_id)
        if denial is not None:
            self.metrics.rate_limited.inc(("requests",))
            raise rate_limited(denial, key_id)
        body: ChatBody = await read_chat_body(request, self.settings)
        record.stream = body.stream
        if self.settings.log_content:
            record.messages = body.messages
        reserved, denial = await self._reserve(key_id, estimate_prompt_tokens(body.size))
        if denial is not None:
            self.metrics.rate_limited.inc(("tokens",))
            raise rate_limited(denial, key_id)
        create: Any = self.client.chat.completions.create
        messages, kwargs = body.messages, body.kwargs
        if body.stream:
            return await self._stream(request, record, create, messages, kwargs, reserved)
        try:
            completion: ChatCompletion = await create(messages=messages, **kwargs)
        except LLMRouterError as exc:
            await self._settle(key_id, reserved, 0)
            raise self._upstream_error(exc, record) from None
        usage = completion.usage
        prompt = usage.prompt_tokens if usage else None
        out = usage.completion_tokens if usage else 0
        await self._settle(key_id, reserved, (prompt or 0) + out)
        self._account(record, completion.route, prompt, out)
        if self.settings.log_content and completion.choices:
            record.response_text = completion.choices[0].message.content
        record.status = 200
        return web.Response(
            body=completion.model_dump_json(exclude_unset=True).encode(),
            content_type=_JSON,
            headers={"x-request-id": record.request_id},
        )

    async def _stream(
        self,
        request: web.Request,
        record: AccessRecord,
        create: Any,
        messages: Any,
        kwargs: dict[str, Any],
        reserved: int,
    ) -> web.StreamResponse:
        key_id = record.key_id or ""
        tally = StreamTally(self.settings.log_content)
        try:
            stream = await create(messages=messages, stream=True, **kwargs)
        except LLMRouterError as exc:
            await self._settle(key_id, reserved, 0)
            raise self._upstream_error(exc, record) from None
        async with stream:
            held: list[bytes] = []
            try:
                async for chunk in stream:  # hold chunks back while failover is still possible
                    tally.add(chunk)
                    held.append(encode(chunk))
                    if has_output(chunk):
                        break
            except LLMRouterError as exc:
                await self._settle(key_id, reserved, 0)
                self._account(record, stream.route, None, 0)
                raise self._upstream_error(exc, record) from None
            response = web.StreamResponse(
                status=200, headers={**SSE_HEADERS, "x-request-id": record.request_id}
            )
            record.status = 200
            record.ttft_s = time.monotonic() - record.started
            if stream.route.backend:
                self.metrics.ttft.observe((stream.route.backend,), record.ttft_s)
            try:
                await response.prepare(request)
                await response.write(b"".join(held))
            except ConnectionError:  # the client left before the answer started
                record.status = 499  # nginx's "client closed request"
                record.error = "ClientDisconnected"
                self._account(record, stream.route, tally.prompt_tokens, tally.output_tokens)
                return response
            tail = None if not self.settings.passthrough or tally.keep_text else take_over(stream)
            pump = None if tail is None else pump_raw(tail, response, tally)
            record.error = await relay(stream, response, tally, self.streams, self.cut, pump)
            if record.error == "ClientDisconnected":
                record.status = 499
        out = tally.output_tokens
        await self._settle(key_id, reserved, (tally.prompt_tokens or 0) + out)
        self._account(record, stream.route, tally.prompt_tokens, out)
        if self.settings.log_content:
            record.response_text = "".join(tally.parts)
        return response

    async def models(self, request: web.Request) -> web.StreamResponse:
        record = self._begin(request)
        try:
            record.key_id = self._authenticate(request)
            try:
                models = await self.client.models.list()
            except LLMRouterError as exc:
                raise self._upstream_error(exc, record) from None
            record.status = 200
            return web.Response(
                body=models.model_dump_json(exclude_unset=True).encode(),
                content_type=_JSON,
                headers={"x-request-id": record.request_id},
            )
        except GatewayError as err:
            return self._error(err, record)
        finally:
            self._end(record, MODELS)

    async def not_found(self, request: web.Request) -> web.StreamResponse:
        """Any other method or path: an OpenAI-style 404 instead of aiohttp's text page."""
        body = error_body(
            f"no such endpoint: {request.method} {request.path}",
            "invalid_request_error",
            code="unknown_url",
        )
        return web.Response(status=404, body=body, content_type=_JSON)

    async def health(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"status": "ok"})

    async def ready(self, request: web.Request) -> web.StreamResponse:
        members = self.members()
        if request.query.get("probe") in ("1", "true", "yes"):
            router = self.client._router
            results = await asyncio.gather(*(router.probe(m) for m in members))
            usable = sum(results)
        else:
            usable = sum(1 for m in members if m.breaker.state != "open")
        ok = usable > 0 and not self.draining
        status = "ready" if ok else ("draining" if self.draining else "no usable backend")
        return web.json_response(
            {"status": status, "usable_backends": usable, "backends": len(members)},
            status=200 if ok else 503,
        )

    async def prometheus(self, request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=self.metrics.render().encode(), headers={"Content-Type": CONTENT_TYPE}
        )

    # -- shutdown -------------------------------------------------------------------------

    async def drain(self, app: web.Application) -> None:
        """``on_shutdown``: refuse new requests, let in-flight ones finish within the grace
        period, then cut the streams still running (each ends with an error event)."""
        self.draining = True
        try:
            await asyncio.wait_for(self.idle.wait(), self.settings.grace_s)
            return
        except asyncio.TimeoutError:
            pass
        for task in list(self.streams):
            self.cut.add(task)
            task.cancel()
        if self.streams or self.cut:
            await asyncio.sleep(0)
        try:
            await asyncio.wait_for(self.idle.wait(), 1.0)
        except asyncio.TimeoutError:
            logger.warning("%d request(s) still running after the grace period", self.in_flight)

"""The gateway's HTTP handlers: chat completions, models, health, readiness, metrics.

``POST /v1/chat/completions`` goes, in order: draining? (503), the bearer key (401), the
per-key request limit (429), the body size (413), JSON and field validation (400), the per-key
token limit (429), then the client. ``/v1/*`` needs a key when keys are configured;
``/health``, ``/ready`` and ``/metrics`` never do (probes and scrapers), and say nothing secret.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

from aiohttp import web

from llmrouter._request import BODY_PARAMS
from llmrouter.errors import LLMRouterError
from llmrouter.server.accesslog import AccessRecord
from llmrouter.server.metrics import CONTENT_TYPE, GatewayMetrics
from llmrouter.server.ratelimit import (
    Denial,
    RateLimiter,
    SharedRateLimiter,
    estimate_prompt_tokens,
)
from llmrouter.server.responses import GatewayError, error_body, from_exception
from llmrouter.server.streaming import SSE_HEADERS, StreamTally, encode, has_output, relay
from llmrouter.types import ChatCompletion

if TYPE_CHECKING:
    from llmrouter import AsyncClient
    from llmrouter._async.router import Member
    from llmrouter.route import Route
    from llmrouter.server.app import GatewaySettings
    from llmrouter.state import AsyncStateStore

__all__ = ["Gateway"]

logger = logging.getLogger("llmrouter.server")

CHAT = "/v1/chat/completions"
MODELS = "/v1/models"
_JSON = "application/json"


def _rate_limited(denial: Denial, key_id: str) -> GatewayError:
    unit = "requests" if denial.limit == "requests" else "tokens"
    return GatewayError(
        429,
        f"rate limit reached for key id {key_id!r}: {denial.per_minute} {unit} per minute; "
        f"retry after {denial.retry_after_header} s",
        "rate_limit_error",
        code="rate_limit_exceeded",
        headers={"Retry-After": denial.retry_after_header},
        error_class="RateLimited",
    )


def _create_kwargs(body: dict[str, Any]) -> dict[str, Any]:
    """The body's fields as ``create`` keyword arguments; unknown fields go in ``extra_body``."""
    kwargs: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for name, value in body.items():
        if name in BODY_PARAMS or name == "model":
            kwargs[name] = value
        elif name not in ("messages", "stream"):
            extra[name] = value  # engine-specific fields (vLLM's top_k, ...), as the SDK sends
    if extra:
        kwargs["extra_body"] = extra
    return kwargs


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
        if self.draining:
            headers["Connection"] = "close"
        return web.Response(status=err.status, body=err.body(), content_type=_JSON, headers=headers)

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

    def _upstream_error(self, exc: LLMRouterError) -> GatewayError:
        wait = self.unusable_for()
        err = from_exception(exc, nothing_usable=wait is not None)
        if err.status == 503 and wait is not None:
            err.headers["Retry-After"] = str(max(1, round(wait)))
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

    async def _read_body(self, request: web.Request) -> tuple[dict[str, Any], int]:
        limit = self.settings.max_body_bytes
        too_large = GatewayError(
            413,
            f"request body over the limit of {limit} bytes",
            "invalid_request_error",
            code="request_too_large",
            error_class="RequestTooLarge",
        )
        if request.content_length is not None and request.content_length > limit:
            raise too_large
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise too_large from None
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise GatewayError(
                400,
                f"body: malformed JSON: {exc}",
                "invalid_request_error",
                param="body",
                error_class="MalformedJSON",
            ) from None
        if not isinstance(body, dict):
            raise GatewayError(
                400,
                "body: expected a JSON object",
                "invalid_request_error",
                param="body",
                error_class="InvalidBody",
            )
        return body, len(raw)

    # -- handlers -------------------------------------------------------------------------

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        record = self._begin(request)
        try:
            return await self._chat(request, record)
        except GatewayError as err:
            return self._error(err, record)
        except Exception:
            logger.exception("request %s failed", record.request_id)
            return self._error(GatewayError(500, "internal error", "server_error"), record)
        finally:
            self._end(record, CHAT)

    async def _chat(self, request: web.Request, record: AccessRecord) -> web.StreamResponse:
        key_id = record.key_id = self._authenticate(request)
        denial = await self._admit(key_id)
        if denial is not None:
            self.metrics.rate_limited.inc(("requests",))
            raise _rate_limited(denial, key_id)
        body, size = await self._read_body(request)
        messages = body.get("messages")
        stream = body.get("stream", False)
        if stream is None:
            stream = False
        if not isinstance(stream, bool):
            raise GatewayError(
                400,
                f"stream: expected true or false, got {stream!r}",
                "invalid_request_error",
                param="stream",
                error_class="InvalidRequestError",
            )
        record.stream = stream
        if self.settings.log_content:
            record.messages = messages
        reserved, denial = await self._reserve(key_id, estimate_prompt_tokens(size))
        if denial is not None:
            self.metrics.rate_limited.inc(("tokens",))
            raise _rate_limited(denial, key_id)
        kwargs = _create_kwargs(body)
        create: Any = self.client.chat.completions.create
        if stream:
            return await self._stream(request, record, create, messages, kwargs, reserved)
        try:
            completion: ChatCompletion = await create(messages=messages, **kwargs)
        except LLMRouterError as exc:
            await self._settle(key_id, reserved, 0)
            raise self._upstream_error(exc) from None
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
            raise self._upstream_error(exc) from None
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
                raise self._upstream_error(exc) from None
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
            record.error = await relay(stream, response, tally, self.streams, self.cut)
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
                raise self._upstream_error(exc) from None
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

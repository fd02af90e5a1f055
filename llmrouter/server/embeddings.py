"""``POST /v1/embeddings`` on the gateway: the same path as chat (draining, the bearer key,
the per-key in-flight cap, request and token rate limits, body size and nesting limits,
metrics and the access log), then ``client.embeddings.create``.

The body is openai-python's (``input``, ``model``, ``dimensions``, ``encoding_format``,
``user``); other fields go to the backend as ``extra_body``. Vectors go back as the call asked
for them: the openai SDK asks for base64 by default and decodes it itself.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web

from llmrouter.errors import LLMRouterError
from llmrouter.server.intake import _invalid, _parse, _read
from llmrouter.server.ratelimit import estimate_prompt_tokens
from llmrouter.server.responses import GatewayError, rate_limited

if TYPE_CHECKING:
    from llmrouter.embeddings import CreateEmbeddingResponse
    from llmrouter.server.accesslog import AccessRecord
    from llmrouter.server.routes import Gateway

__all__ = ["EMBEDDINGS", "embeddings"]

EMBEDDINGS = "/v1/embeddings"
_FIELDS = ("input", "model", "dimensions", "encoding_format", "user")
logger = logging.getLogger("llmrouter.server")


async def embeddings(gateway: Gateway, request: web.Request) -> web.StreamResponse:
    """The handler (registered by ``llmrouter.server.app``)."""
    record = gateway._begin(request)
    held: str | None = None
    try:
        key_id = record.key_id = gateway._authenticate(request)
        gateway._hold(key_id)
        held = key_id
        return await _embed(gateway, request, record, key_id)
    except GatewayError as err:
        return gateway._error(err, record)
    except asyncio.CancelledError:
        record.status = 503 if gateway.draining else 499
        record.error = "ShutdownCut" if gateway.draining else "ClientDisconnected"
        raise
    except Exception:
        logger.exception("request %s failed", record.request_id)
        return gateway._error(GatewayError(500, "internal error", "server_error"), record)
    finally:
        if held is not None:
            gateway._release(held)
        gateway._end(record, EMBEDDINGS)


async def _embed(
    gateway: Gateway, request: web.Request, record: AccessRecord, key_id: str
) -> web.StreamResponse:
    denial = await gateway._admit(key_id)
    if denial is not None:
        gateway.metrics.rate_limited.inc(("requests",))
        raise rate_limited(denial, key_id)
    raw = await _read(request, gateway.settings)
    body = _parse(raw, gateway.settings.max_json_depth)
    if not isinstance(body, dict):
        raise _invalid("body: expected a JSON object", "body", "InvalidBody")
    if "input" not in body:
        raise _invalid("input: required", "input", "InvalidBody")
    kwargs: dict[str, Any] = {k: body[k] for k in _FIELDS if body.get(k) is not None}
    extra = {k: v for k, v in body.items() if k not in _FIELDS}
    if extra:
        kwargs["extra_body"] = extra
    reserved, denial = await gateway._reserve(key_id, estimate_prompt_tokens(len(raw)))
    if denial is not None:
        gateway.metrics.rate_limited.inc(("tokens",))
        raise rate_limited(denial, key_id)
    try:
        resp: CreateEmbeddingResponse = await gateway.client.embeddings.create(**kwargs)
    except LLMRouterError as exc:
        await gateway._settle(key_id, reserved, 0)
        raise gateway._upstream_error(exc, record) from None
    prompt = resp.usage.prompt_tokens
    await gateway._settle(key_id, reserved, prompt)
    gateway._account(record, resp.route, prompt, 0)
    record.status = 200
    return web.Response(
        body=resp.model_dump_json().encode(),
        content_type="application/json",
        headers={"x-request-id": record.request_id},
    )

"""A FastAPI service on ``AsyncClient``, with failover across backends.

    pip install fastapi uvicorn
    export LLMROUTER_URL="vllm://gpu-1:8000?ttft_timeout=2, openai://?model=gpt-4o-mini"
    uvicorn --app-dir examples fastapi_service:app --port 8000

    curl -s localhost:8000/chat -H 'content-type: application/json' \\
         -d '{"messages": [{"role": "user", "content": "Hi!"}]}'
    curl -sN localhost:8000/chat/stream -H 'content-type: application/json' \\
         -d '{"messages": [{"role": "user", "content": "Hi!"}]}'
    curl -s localhost:8000/health

One ``AsyncClient`` for the whole process, opened and closed by the app's lifespan: it holds
the connection pools, the circuit breakers and the retry budget, which only work when shared.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from llmrouter import (
    AllBackendsFailedError,
    AsyncClient,
    AsyncStream,
    BackendTimeoutError,
    BadRequestError,
    ContextLengthError,
    InvalidRequestError,
    LLMRouterError,
)

log = logging.getLogger("fastapi_service")


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str = Field(min_length=1, max_length=32_000)


class ChatRequest(BaseModel):
    """What this service accepts: fewer knobs than the OpenAI API, each one bounded."""

    messages: list[Message] = Field(min_length=1, max_length=64)
    max_tokens: int = Field(default=256, ge=1, le=2048)
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)


class ChatResponse(BaseModel):
    answer: str
    backend: str
    attempts: int
    total_tokens: int | None


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # LLMROUTER_URL holds the chain; a bad URL fails here, at start-up, not on the first call.
    async with AsyncClient(timeout=30) as client:
        app.state.llm = client
        yield


app = FastAPI(title="llmrouter example", lifespan=lifespan)


def _llm(request: Request) -> AsyncClient:
    client: AsyncClient = request.app.state.llm
    return client


def _http_error(exc: LLMRouterError) -> HTTPException:
    """Our errors as HTTP: the caller's fault is 400, the backends' 502 (504 for timeouts).

    Backend details (URLs, upstream messages) go to the logs, not to the caller.
    """
    if isinstance(exc, InvalidRequestError):  # caught before sending: safe to echo
        return HTTPException(400, str(exc))
    log.warning("LLM call failed: %s: %s", type(exc).__name__, exc)  # names no key
    if isinstance(exc, ContextLengthError):
        return HTTPException(400, "the conversation is too long for the model")
    if isinstance(exc, BadRequestError):
        return HTTPException(400, "the language model rejected the request")
    errors = exc.errors if isinstance(exc, AllBackendsFailedError) else [exc]
    if errors and all(isinstance(error, BackendTimeoutError) for error in errors):
        return HTTPException(504, "the language model did not answer in time")
    return HTTPException(502, "the language model is unavailable")


def _params(body: ChatRequest) -> dict[str, Any]:
    return {
        "messages": [m.model_dump() for m in body.messages],
        "max_tokens": body.max_tokens,
        "temperature": body.temperature,
    }


@app.post("/chat")
async def chat(body: ChatRequest, request: Request) -> ChatResponse:
    try:
        resp = await _llm(request).chat.completions.create(**_params(body))
    except LLMRouterError as exc:
        raise _http_error(exc) from exc
    return ChatResponse(
        answer=resp.choices[0].message.content or "",
        backend=resp.route.backend,
        attempts=len(resp.route.attempts),
        total_tokens=resp.usage.total_tokens if resp.usage else None,
    )


def _sse(data: dict[str, Any] | str, event: str | None = None) -> str:
    payload = data if isinstance(data, str) else json.dumps(data)
    return (f"event: {event}\n" if event else "") + f"data: {payload}\n\n"


async def _open_stream(client: AsyncClient, body: ChatRequest) -> AsyncStream:
    try:
        stream: AsyncStream = await client.chat.completions.create(**_params(body), stream=True)
    except LLMRouterError as exc:
        raise _http_error(exc) from exc
    return stream


@app.post("/chat/stream")
async def chat_stream(body: ChatRequest, request: Request) -> StreamingResponse:
    """Server-sent events: ``data: {"delta": ...}`` lines, then ``data: [DONE]``.

    The first chunk is awaited before the response starts, so a chain that fails outright is
    a plain 502 rather than a broken stream. After that, llmrouter still fails over until the
    first content; a failure after content arrives as an ``event: error`` and ends the stream.
    A last ``event: route`` says which backend served.
    """
    stream = await _open_stream(_llm(request), body)
    try:
        first = await anext(stream, None)
    except LLMRouterError as exc:
        await stream.aclose()
        raise _http_error(exc) from exc

    async def events(stream: AsyncStream) -> AsyncIterator[str]:
        async with stream:  # closes the backend connection if the client goes away
            try:
                chunk = first
                while chunk is not None:
                    text = chunk.choices[0].delta.content if chunk.choices else None
                    if text:
                        yield _sse({"delta": text})
                    chunk = await anext(stream, None)
            except LLMRouterError as exc:
                # Headers are sent: report in-band. StreamInterruptedError keeps the partial text.
                yield _sse({"error": type(exc).__name__}, event="error")
            else:
                # Which backend served, and after how many attempts (known once it has ended).
                route = stream.route
                yield _sse({"backend": route.backend, "attempts": len(route.attempts)}, "route")
            yield _sse("[DONE]")

    return StreamingResponse(events(stream), media_type="text/event-stream")


@app.get("/health")
async def health(request: Request) -> dict[str, Any]:
    """Liveness, and the backends this process routes to (URLs without secrets)."""
    return {"status": "ok", "backends": [spec.name for spec in _llm(request).backends]}

"""The hand-written alternative to ``llmrouter serve``, for ``bench/gateway.py --wrk``: FastAPI
and ``openai.AsyncOpenAI`` relaying ``/v1/chat/completions`` to one backend, run as::

    BENCH_BACKEND=http://127.0.0.1:PORT/v1 uvicorn --app-dir bench _fastapi_openai:app \\
        --workers N --loop uvloop --no-access-log

It is what teams write by hand: one client per process, the request body passed on, a plain
answer returned as the SDK's model dumped to JSON, a stream re-encoded chunk by chunk as SSE.
No failover, no limits: only the relay's cost is compared.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from openai import AsyncOpenAI

app = FastAPI()
client = AsyncOpenAI(base_url=os.environ["BENCH_BACKEND"], api_key="unused", max_retries=0)


@app.post("/v1/chat/completions")
async def chat(request: Request) -> Any:
    body = await request.json()
    if body.pop("stream", False):
        stream = await client.chat.completions.create(**body, stream=True)

        async def events() -> AsyncIterator[bytes]:
            async for chunk in stream:
                yield b"data: " + chunk.model_dump_json(exclude_unset=True).encode() + b"\n\n"
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")
    completion = await client.chat.completions.create(**body)
    return Response(completion.model_dump_json(exclude_unset=True), media_type="application/json")

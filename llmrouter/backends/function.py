"""A plain Python function as a backend (``Client(backends=[my_function])``): the shaping that
both drivers share, no I/O.

The function takes the validated :class:`~llmrouter._request.ChatRequest` and returns the answer
text, a :class:`~llmrouter.types.ChatCompletion`, or an iterable of text pieces (a generator
streams). It runs in a worker thread on the async client and in the caller's thread on the sync
one; the request's deadlines are checked between the pieces it yields (a function that returns
one string is checked once it returns), and a stream closed early closes the generator. It gets
the router's failover, breaker, balancing and route like any backend; raise an
:mod:`llmrouter.errors` ``BackendError`` to fail over.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from llmrouter._concurrency import GenerationWatch
from llmrouter._request import ChatRequest
from llmrouter.backends.spec import BackendSpec
from llmrouter.errors import ProtocolError
from llmrouter.types import ChatCompletion, ChatCompletionChunk, Model, ModelList

__all__ = ["AnswerFunction", "completion", "model_list", "pieces", "to_chunks"]

AnswerFunction = Callable[[ChatRequest], "str | ChatCompletion | Iterable[str]"]


def _model(spec: BackendSpec, request: ChatRequest) -> str:
    return spec.model or request.model or spec.name


def pieces(
    spec: BackendSpec, request: ChatRequest, watch: GenerationWatch, cancel: threading.Event
) -> Iterator[str | ChatCompletion]:
    """Call the function; yield its text pieces (or its one completion), checking the
    deadlines after each and stopping when ``cancel`` is set."""
    function: Any = spec.instance
    result = function(request)
    if isinstance(result, (str, ChatCompletion)):
        watch.token()
        yield result
        return
    if not isinstance(result, Iterable):
        raise ProtocolError(
            f"the function returned {type(result).__name__}: expected str, ChatCompletion "
            "or an iterable of str",
            backend=spec.name,
        )
    iterator = iter(result)
    try:
        for piece in iterator:
            if cancel.is_set():
                return
            if not isinstance(piece, str):
                raise ProtocolError(
                    f"the function yielded {type(piece).__name__}: expected str",
                    backend=spec.name,
                )
            watch.token()
            yield piece
            watch.waiting()
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


def completion(
    spec: BackendSpec, request: ChatRequest, parts: Iterable[str | ChatCompletion]
) -> ChatCompletion:
    """The whole answer as one completion."""
    text: list[str] = []
    for part in parts:
        if isinstance(part, ChatCompletion):
            return part
        text.append(part)
    return ChatCompletion.model_validate(
        {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "created": int(time.time()),
            "model": _model(spec, request),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(text)},
                    "finish_reason": "stop",
                }
            ],
        }
    )


def to_chunks(
    spec: BackendSpec, request: ChatRequest, parts: Iterable[str | ChatCompletion]
) -> Iterator[ChatCompletionChunk]:
    """The answer as OpenAI chunks: a role chunk, one per piece, then the finish chunk."""
    chunk_id, created, model = (
        f"chatcmpl-{uuid.uuid4().hex}",
        int(time.time()),
        _model(spec, request),
    )

    def chunk(delta: dict[str, Any], finish: str | None = None) -> ChatCompletionChunk:
        return ChatCompletionChunk.model_validate(
            {
                "id": chunk_id,
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
        )

    first = True
    for part in parts:
        text = part if isinstance(part, str) else part.choices[0].message.content or ""
        delta: dict[str, Any] = {"content": text}
        if first:
            delta["role"] = "assistant"
            first = False
        yield chunk(delta)
    yield chunk({"role": "assistant"} if first else {}, "stop")


def model_list(spec: BackendSpec) -> ModelList:
    """The one model a function serves: its pinned name, else its own name."""
    return ModelList(data=[Model(id=spec.model or spec.name, created=0, owned_by="function")])

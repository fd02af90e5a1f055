"""A loopback fake of Text Generation Inference's router (TGI 3.x), from ``protocols/tgi.md``.

It reuses the OpenAI fake's server (real sockets on a background thread, recorded requests,
scripted responses) and answers as TGI does::

    with TGIFake(model_id="org/model", max_input_tokens=64) as tgi:
        tgi.script(generation_error("CUDA out of memory"))
        client = llmrouter.Client(tgi.url)          # "tgi://127.0.0.1:PORT"

Routes: ``GET /info`` (model id and token limits), ``GET /health`` (200 with an empty body, or
503 ``{"error": "unhealthy", "error_type": "healthcheck"}`` while ``healthy`` is false),
``GET /v1/models`` (one entry), ``POST /v1/chat/completions``.

Chat requests are checked as TGI checks them: axum rejects a body that does not fit TGI's types
with a plain-text status (415 without ``Content-Type: application/json``, 400 for bad JSON, 422
for a wrong shape: a string ``stop``, an object ``logit_bias``, OpenAI's ``json_schema``
response format); converting the request rejects ``response_format`` with ``tools`` (422
``tool_error``); validation rejects ``top_p`` outside (0, 1), too many stop strings, a prompt over
``max_input_tokens`` and prompt + ``max_tokens`` over ``max_total_tokens`` (422 ``validation``:
an HTTP error, or, for a stream, a ``data:{"error": ...}`` event in a 200 answer). Answers have
``id: ""``, echo the served model for ``"tgi"``, finish with ``stop_sequence`` when a stop
string matched, and stream as ``data:{json}`` without a space, with ``:`` keep-alives and a
final ``data:[DONE]``. Tokens are whitespace-separated words (one more per message).

Scripted responses (``script``) answer the next chat requests before any of that; the helpers
below build TGI's error answers and stream frames.
"""

from __future__ import annotations

import json
from typing import Any

from tests.fakes.openai_fake import (
    CREATED,
    Close,
    Completion,
    Error,
    OpenAIFake,
    Recorded,
    Response,
    Stall,
    Stream,
    _chunked,
    _Conn,
    _head,
)

MODEL_ID = "meta-llama/Llama-3.1-8B-Instruct"
FINGERPRINT = "3.3.6-dev0-native"
REPLY = "Hello! How can I help you today?"

# ---------------------------------------------------------------------------------------------
# Frames and error answers


def event(data: Any) -> bytes:
    """One SSE event as axum writes it: ``data:`` + compact JSON, no space."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data:{text}\n\n".encode()


KEEP_ALIVE = b":\n\n"
DONE = event("[DONE]")


def tgi_chunk(
    delta: dict[str, Any] | None = None,
    finish_reason: str | None = None,
    *,
    model: str = MODEL_ID,
    usage: dict[str, Any] | None = None,
    choices: list[Any] | None = None,
) -> dict[str, Any]:
    """One TGI stream chunk (``id`` is empty, as TGI sends it)."""
    if choices is None:
        choices = [
            {
                "index": 0,
                "delta": {"role": "assistant", **(delta or {})},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ]
    return {
        "object": "chat.completion.chunk",
        "id": "",
        "created": CREATED,
        "model": model,
        "system_fingerprint": FINGERPRINT,
        "choices": choices,
        "usage": usage,
    }


def tgi_stream(*texts: str, finish: str | None = "stop", done: bool = True) -> list[bytes]:
    """The frames of a TGI stream: a keep-alive, one chunk per text (the last finishing)."""
    frames = [KEEP_ALIVE]
    for i, text in enumerate(texts):
        last = i == len(texts) - 1
        frames.append(event(tgi_chunk({"content": text}, finish if last else None)))
    if done:
        frames.append(DONE)
    return frames


def error_event(message: str) -> bytes:
    """A mid-stream error: TGI always says ``http_status_code: 422`` there."""
    return event({"error": {"message": message, "http_status_code": 422}})


def tgi_error(status: int, message: str, error_type: str, **headers: str) -> Error:
    """TGI's error answer: ``{"error": str, "error_type": str}``."""
    return Error(status, {"error": message, "error_type": error_type}, dict(headers))


def validation_error(message: str) -> Error:
    return tgi_error(422, f"Input validation error: {message}", "validation")


def generation_error(message: str = "CUDA out of memory") -> Error:
    return tgi_error(424, f"Request failed during generation: {message}", "generation")


def overloaded(**headers: str) -> Error:
    return tgi_error(429, "Model is overloaded", "overloaded", **headers)


def rejection(status: int, text: str) -> Error:
    """axum's plain-text rejection of a body that does not fit the handler's type."""
    return Error(status, text, content_type="text/plain; charset=utf-8")


# ---------------------------------------------------------------------------------------------
# The server


class _Rejected(Exception):
    def __init__(self, response: Error, *, infer: bool = False) -> None:
        super().__init__(response.body)
        self.response = response
        self.infer = infer  # raised by TGI's validation: a stream reports it as an event


def _shape_error(field: str, detail: str) -> _Rejected:
    return _Rejected(
        rejection(
            422,
            "Failed to deserialize the JSON body into the target type: "
            f"{field}: {detail} at line 1 column 1",
        )
    )


def _words(text: str) -> int:
    return len(text.split())


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


class TGIFake(OpenAIFake):
    """The fake TGI router.

    Args:
        model_id: what ``/info`` reports and answers echo for ``model: "tgi"``.
        max_input_tokens: prompt limit (words + one per message).
        max_total_tokens: prompt + ``max_tokens`` limit.
        reply: the text every answer generates (cut by ``max_tokens`` and stop strings).
        echo_tgi: answer ``model: "tgi"`` as some TGI releases did, instead of the model id.
        serves_info: ``False`` answers ``GET /info`` with 404, as a proxy that exposes only
            ``/v1`` does.
    """

    def __init__(
        self,
        model_id: str = MODEL_ID,
        *,
        max_input_tokens: int = 1000,
        max_total_tokens: int = 2048,
        max_stop_sequences: int = 4,
        reply: str = REPLY,
        echo_tgi: bool = False,
        serves_info: bool = True,
    ) -> None:
        super().__init__(models=[model_id])
        self.model_id = model_id
        self.max_input_tokens = max_input_tokens
        self.max_total_tokens = max_total_tokens
        self.max_stop_sequences = max_stop_sequences
        self.reply = reply
        self.echo_tgi = echo_tgi
        self.serves_info = serves_info
        self.healthy = True

    @property
    def url(self) -> str:
        return f"tgi://127.0.0.1:{self.port}"

    def info(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "model_sha": None,
            "model_pipeline_tag": "text-generation",
            "max_concurrent_requests": 128,
            "max_best_of": 2,
            "max_stop_sequences": self.max_stop_sequences,
            "max_input_tokens": self.max_input_tokens,
            "max_total_tokens": self.max_total_tokens,
            "validation_workers": 2,
            "max_client_batch_size": 4,
            "router": "text-generation-router",
            "version": "3.3.6-dev0",
            "sha": None,
            "docker_label": None,
        }

    # -- routing ---------------------------------------------------------------------------

    async def _respond(self, conn: _Conn, request: Recorded) -> bool:
        path = request.path.split("?", 1)[0]
        response: Response
        if (
            request.method == "GET"
            and path in ("/info", "/v1/models")
            and self.discovery is not None
        ):
            response = self.discovery
        elif request.method == "GET" and path == "/info" and self.serves_info:
            response = Error(200, self.info())
        elif request.method == "GET" and path in ("/health", "/ping"):
            response = (
                Error(200, b"", content_type="text/plain")
                if self.healthy
                else tgi_error(503, "unhealthy", "healthcheck")
            )
        elif request.method == "GET" and path == "/v1/models":
            item = {"id": self.model_id, "object": "model", "created": 0}
            response = Error(200, {"object": "list", "data": [{**item, "owned_by": self.model_id}]})
        elif request.method == "POST" and path == "/v1/chat/completions":
            response = self._queue.popleft() if self._queue else self._chat(request)
        else:
            response = Error(404, b"", content_type="text/plain")
        return await self._write(conn, response)

    async def _write(self, conn: _Conn, response: Response) -> bool:
        if isinstance(response, Close):
            return False
        if isinstance(response, Stall):
            await self._until_hangup(conn, None)
        if isinstance(response, Stream):
            return await self._stream(conn, response)
        if isinstance(response, Completion):
            response = Error(200, response.payload(), response.headers)
        assert isinstance(response, Error)
        body, ctype = response.encoded()
        head = {"Content-Type": ctype, **response.headers}
        if response.chunked:
            head["Transfer-Encoding"] = "chunked"
            body = _chunked(body) + b"0\r\n\r\n"
        else:
            head["Content-Length"] = str(len(body))
        await conn.write(_head(response.status, head) + body)
        return True

    # -- the Messages API ------------------------------------------------------------------

    def _chat(self, request: Recorded) -> Response:
        try:
            body = self._parse(request)
        except _Rejected as rejected:
            return rejected.response
        try:
            self._convert(body)
            self._validate(body)
        except _Rejected as rejected:
            if rejected.infer and body.get("stream"):
                # Validation runs inside the stream: a 200 answer with an error event.
                message = rejected.response.body["error"]
                return Stream([error_event(message), DONE])
            return rejected.response
        return self._generate(body)

    def _parse(self, request: Recorded) -> dict[str, Any]:
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            raise _Rejected(
                rejection(415, "Expected request with `Content-Type: application/json`")
            )
        try:
            body = json.loads(request.body)
        except ValueError as exc:
            raise _Rejected(
                rejection(400, f"Failed to parse the request body as JSON: {exc}")
            ) from None
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            raise _shape_error("messages", "missing field `messages`")
        stop = body.get("stop")
        if stop is not None and not (
            isinstance(stop, list) and all(isinstance(s, str) for s in stop)
        ):
            raise _shape_error("stop", f"invalid type: {type(stop).__name__}, expected a sequence")
        bias = body.get("logit_bias")
        if bias is not None and not (
            isinstance(bias, list) and all(isinstance(b, int | float) for b in bias)
        ):
            raise _shape_error("logit_bias", "invalid type: map, expected a sequence")
        fmt = body.get("response_format")
        if fmt is not None and (
            not isinstance(fmt, dict)
            or fmt.get("type") not in ("json", "json_object", "regex", "json_schema")
            or "value" not in fmt
        ):
            raise _shape_error("response_format", "missing field `value`")
        for name in ("seed", "max_tokens", "n", "top_logprobs"):
            value = body.get(name)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise _shape_error(name, f"invalid value: {value!r}, expected u32")
        for message in body["messages"]:
            if not isinstance(message, dict) or "role" not in message:
                raise _shape_error("messages", "missing field `role`")
            content = message.get("content")
            if not isinstance(content, str | list) and not message.get("tool_calls"):
                raise _shape_error("messages", "data did not match any variant of MessageBody")
        return body

    @staticmethod
    def _convert(body: dict[str, Any]) -> None:
        """Errors found while turning the chat request into a generate request (HTTP 422)."""
        if body.get("response_format") is not None and body.get("tools"):
            raise _Rejected(
                tgi_error(422, "Tool error: Grammar and tools are mutually exclusive", "tool_error")
            )

    def _validate(self, body: dict[str, Any]) -> None:
        """TGI's validation (router/src/validation.rs): 422 validation errors."""

        def fail(message: str) -> _Rejected:
            return _Rejected(validation_error(message), infer=True)

        temperature = body.get("temperature")
        if temperature is not None and temperature < 0:
            raise fail("`temperature` must be strictly positive")
        top_p = body.get("top_p")
        if top_p is not None and not 0 < top_p < 1:
            raise fail("`top_p` must be > 0.0 and < 1.0")
        presence = body.get("presence_penalty")
        if presence is not None and presence + 2.0 <= 0:
            raise fail("`repetition_penalty` must be strictly positive")
        frequency = body.get("frequency_penalty")
        if frequency is not None and not -2 <= frequency <= 2:
            raise fail("`frequency_penalty` must be >= -2.0 and <= 2.0")
        stop = body.get("stop") or []
        if len(stop) > self.max_stop_sequences:
            raise fail(
                f"`stop` supports up to {self.max_stop_sequences} stop sequences. "
                f"Given: {len(stop)}"
            )
        if (body.get("top_logprobs") or 0) > 5:
            raise fail(f"`top_n_tokens` must be >= 0 and <= 5. Given: {body['top_logprobs']}")
        fmt = body.get("response_format")
        value = fmt["value"] if fmt is not None else None
        if (
            fmt is not None
            and fmt["type"] in ("json", "json_object")
            and "properties" not in (value if isinstance(value, dict) else {})
        ):
            raise fail("grammar is not valid: Grammar must have a 'properties' field")
        max_tokens = body.get("max_tokens")
        if max_tokens == 0:
            raise fail("`max_new_tokens` must be strictly positive")
        inputs = sum(_words(_text_of(m.get("content"))) + 1 for m in body["messages"])
        if inputs >= self.max_input_tokens:
            raise fail(
                f"`inputs` must have less than {self.max_input_tokens} tokens. Given: {inputs}"
            )
        if max_tokens is not None and inputs + max_tokens > self.max_total_tokens:
            raise fail(
                f"`inputs` tokens + `max_new_tokens` must be <= {self.max_total_tokens}. "
                f"Given: {inputs} `inputs` tokens and {max_tokens} `max_new_tokens`"
            )

    def _generate(self, body: dict[str, Any]) -> Response:
        model = body.get("model")
        echoed = model if model not in (None, "tgi") or self.echo_tgi else self.model_id
        echoed = echoed or "tgi"
        inputs = sum(_words(_text_of(m.get("content"))) + 1 for m in body["messages"])
        tools = body.get("tools") or []
        if tools and body.get("tool_choice") != "none":
            return self._tool_call(body, tools, echoed, inputs)
        fmt = body.get("response_format")
        if fmt is not None and isinstance(fmt.get("value"), dict):
            props = fmt["value"].get("properties") or {}
            pieces = [json.dumps({name: "x" for name in props})]
        else:
            pieces = [w if i == 0 else " " + w for i, w in enumerate(self.reply.split(" "))]
        finish = "stop"
        max_tokens = body.get("max_tokens")
        if max_tokens is not None and max_tokens < len(pieces):
            pieces, finish = pieces[:max_tokens], "length"
        text = "".join(pieces)
        for stop in body.get("stop") or []:
            if stop and stop in text:
                text, finish = text[: text.index(stop)], "stop_sequence"
                pieces = [w if i == 0 else " " + w for i, w in enumerate(text.split(" "))]
        usage = {
            "prompt_tokens": inputs,
            "completion_tokens": len(pieces),
            "total_tokens": inputs + len(pieces),
        }
        if body.get("stream"):
            frames = [KEEP_ALIVE]
            for i, piece in enumerate(pieces):
                last = i == len(pieces) - 1
                chunk = tgi_chunk({"content": piece}, finish if last else None, model=echoed)
                frames.append(event(chunk))
                if i == 0:
                    frames.append(KEEP_ALIVE)
            if (body.get("stream_options") or {}).get("include_usage"):
                frames.append(event(tgi_chunk(choices=[], usage=usage, model=echoed)))
            return Stream([*frames, DONE])
        message = {"role": "assistant", "content": text}
        return Error(200, self._completion(message, finish, echoed, usage))

    def _tool_call(
        self, body: dict[str, Any], tools: list[dict[str, Any]], model: str, inputs: int
    ) -> Response:
        choice = body.get("tool_choice")
        named = choice.get("function", {}).get("name") if isinstance(choice, dict) else choice
        fn = next((t["function"] for t in tools if t["function"]["name"] == named), None)
        fn = fn or tools[0]["function"]
        params = fn.get("parameters") or fn.get("arguments") or {}
        arguments = json.dumps({name: "Paris" for name in params.get("properties") or {}})
        usage = {"prompt_tokens": inputs, "completion_tokens": 9, "total_tokens": inputs + 9}
        if not body.get("stream"):
            call = {
                "id": "0",
                "type": "function",
                "function": {"description": None, "name": fn["name"], "arguments": arguments},
            }
            message = {"role": "assistant", "tool_calls": [call]}
            return Error(200, self._completion(message, "stop", model, usage))
        frames = [KEEP_ALIVE]
        parts = ["{", arguments[1:-1], "}"]
        for i, part in enumerate(parts):
            call = {
                "index": 0,
                "id": "",
                "type": "function",
                "function": {"name": fn["name"] if i == 0 else None, "arguments": part},
            }
            finish = "stop" if i == len(parts) - 1 else None
            frames.append(event(tgi_chunk({"tool_calls": [call]}, finish, model=model)))
        return Stream([*frames, DONE])

    @staticmethod
    def _completion(
        message: dict[str, Any], finish: str, model: str, usage: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "object": "chat.completion",
            "id": "",
            "created": CREATED,
            "model": model,
            "system_fingerprint": FINGERPRINT,
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
            ],
            "usage": usage,
        }

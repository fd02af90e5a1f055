"""``llamacpp-native://host:8080``: llama.cpp's text-completion API as an llmrouter backend.

A sans-IO codec (:class:`llmrouter.backends.HTTPCodec`): llmrouter's drivers send, retry,
fail over and enforce deadlines; this module only builds requests and parses bytes.

Why not the OpenAI chat route: ``POST /v1/completions`` takes a raw prompt, so the chat template
is rendered here (``?template=chatml|llama3|gemma``) and works whatever template the server
was started with (or without), and llama.cpp's own sampling knobs pass straight through
``extra_body``: ``grammar`` (a GBNF grammar that constrains the answer), ``logprobs`` (top-n
token probabilities; ``n_probs`` on llama.cpp's C++ ``llama-server``), ``min_p``, ``top_k``,
``repeat_penalty``, ``mirostat_mode``... Both llama-cpp-python's server and the C++
``llama-server`` serve this route.

Wire format (verified against llama-cpp-python's server): the answer is
``{"object": "text_completion", "choices": [{"text", "finish_reason"}], "usage"}``; a stream is
SSE ``data: {...}`` events with ``choices[0].text``, a last event with the ``finish_reason``,
then ``data: [DONE]``; an error is ``{"error": {"message", "type", "code"}}`` (a non-2xx
answer, or an event inside a stream).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llmrouter.backends import (
    BackendDeclaration,
    BackendSpec,
    Capabilities,
    ChatRequest,
    HTTPRequest,
    Option,
    SSEChunkDecoder,
    error_from_status,
)
from llmrouter.errors import InvalidRequestError, ProtocolError, StatusError
from llmrouter.types import ChatCompletion, ChatCompletionChunk, ModelList

__all__ = [
    "BACKEND",
    "TEMPLATES",
    "ChatTemplate",
    "ChunkDecoder",
    "build_chat",
    "build_health",
    "build_models",
    "map_error",
    "parse_chat",
    "parse_models",
    "render",
]


@dataclass(frozen=True)
class ChatTemplate:
    """A chat template: how one turn is written, how the answer is opened, and the marker
    that ends a turn (sent as a stop sequence, since the server applies no template here)."""

    turn: str  # with {role} and {content}
    opening: str  # the assistant's turn, left open for the model
    end: str
    system_role: str | None = "system"  # None: the system prompt joins the first user turn
    roles: Mapping[str, str] | None = None  # renamed roles (Gemma: assistant -> model)


TEMPLATES: dict[str, ChatTemplate] = {
    # SmolLM2, Qwen, Hermes, most fine-tunes.
    "chatml": ChatTemplate(
        turn="<|im_start|>{role}\n{content}<|im_end|>\n",
        opening="<|im_start|>assistant\n",
        end="<|im_end|>",
    ),
    # Llama 3.x (the server adds <|begin_of_text|> itself, as the BOS token).
    "llama3": ChatTemplate(
        turn="<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>",
        opening="<|start_header_id|>assistant<|end_header_id|>\n\n",
        end="<|eot_id|>",
    ),
    # Gemma: no system role, the assistant is "model".
    "gemma": ChatTemplate(
        turn="<start_of_turn>{role}\n{content}<end_of_turn>\n",
        opening="<start_of_turn>model\n",
        end="<end_of_turn>",
        system_role=None,
        roles={"assistant": "model"},
    ),
}

CAPABILITIES = Capabilities(
    tools=False,
    tool_choice=False,
    json_object=False,
    json_schema=False,  # use extra_body={"grammar": ...} to constrain the answer
    stream_usage=False,  # the streamed completion carries no usage
    seed=True,
    n=False,
    logprobs=False,  # token probabilities: extra_body={"logprobs": N}, in the raw answer only
    stop=True,
)

BACKEND = BackendDeclaration(
    scheme="llamacpp-native",
    description="llama.cpp text completions, chat template rendered client-side",
    default_port=8080,
    default_path="",
    key_env="LLAMA_API_KEY",
    options=(
        Option(
            "template",
            choices=tuple(TEMPLATES),
            default="chatml",
            help="the model's chat template, rendered client-side",
        ),
    ),
    capabilities=CAPABILITIES,
)

# OpenAI parameters with the same name and meaning on llama.cpp's completion route.
_PASSED = ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty", "logit_bias")
_IGNORED = ("user", "parallel_tool_calls", "store", "metadata")


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    raise InvalidRequestError(f"unsupported message content: {type(content).__name__}")


def render(messages: list[dict[str, Any]], template: ChatTemplate) -> str:
    """The prompt for ``messages`` in ``template``, the assistant's turn left open."""
    parts: list[str] = []
    pending_system = ""
    for message in messages:
        role, content = str(message["role"]), _text(message.get("content"))
        if role in ("system", "developer"):
            if template.system_role is None:
                pending_system += content + "\n\n"
                continue
            role = template.system_role
        elif pending_system and role == "user":
            content, pending_system = pending_system + content, ""
        if template.roles:
            role = template.roles.get(role, role)
        parts.append(template.turn.format(role=role, content=content))
    return "".join(parts) + template.opening


def _headers(spec: BackendSpec, request: ChatRequest | None, accept: str) -> dict[str, str]:
    headers = {"Accept": accept, "Content-Type": "application/json", **dict(spec.headers)}
    if spec.api_key is not None:  # llama-server --api-key
        headers["Authorization"] = "Bearer " + spec.api_key.reveal()
    if request is not None:
        headers.update(request.extra_headers)
    return headers


def build_chat(spec: BackendSpec, request: ChatRequest, model: str, /) -> HTTPRequest:
    """``POST /v1/completions`` with the rendered prompt."""
    template = TEMPLATES[dict(spec.options).get("template") or "chatml"]
    params = dict(request.params)
    body: dict[str, Any] = {"model": model, "prompt": render(request.messages, template)}
    # llama-cpp-python's server stops at 16 tokens when max_tokens is absent; null: no limit.
    body["max_tokens"] = params.pop("max_completion_tokens", params.pop("max_tokens", None))
    stop = params.pop("stop", None)
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    body["stop"] = [*stops, template.end]
    for name in _PASSED:
        if name in params:
            body[name] = params.pop(name)
    for name in _IGNORED:
        params.pop(name, None)
    options = params.pop("stream_options", None) or {}
    if options.get("include_usage"):
        raise InvalidRequestError(
            "llamacpp-native:// streams carry no usage (stream_options.include_usage)",
            param="stream_options",
        )
    if params:
        raise InvalidRequestError(
            f"llamacpp-native:// does not take {', '.join(sorted(params))} "
            "(llama.cpp's own knobs go in extra_body)",
            param=sorted(params)[0],
        )
    if request.stream:
        body["stream"] = True
    body.update(request.extra_body)
    return HTTPRequest(
        method="POST",
        url=spec.base_url + "/v1/completions",
        headers=_headers(
            spec, request, "text/event-stream" if request.stream else "application/json"
        ),
        body=json.dumps(body).encode(),
        backend=spec.name,
    )


def _json(spec: BackendSpec, raw: bytes, what: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        raise ProtocolError(f"malformed {what}: {raw[:200]!r}", backend=spec.name) from None


def _raise_error_object(spec: BackendSpec, data: Any, raw: bytes) -> None:
    error = data.get("error") if isinstance(data, dict) else None
    if error:
        code = error.get("code") if isinstance(error, dict) else None
        status = code if isinstance(code, int) and 400 <= code <= 599 else 500
        raise error_from_status(status, {}, raw, backend=spec.name)


def _finish(reason: Any) -> str:
    return "length" if reason == "length" else "stop"


def _choice(spec: BackendSpec, data: Any, raw: bytes, what: str) -> dict[str, Any]:
    _raise_error_object(spec, data, raw)
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ProtocolError(f"{what} has no choices: {raw[:200]!r}", backend=spec.name)
    choice: dict[str, Any] = choices[0]
    if not isinstance(choice.get("text", ""), str):
        raise ProtocolError(f"{what}: choices[0].text is not a string", backend=spec.name)
    return choice


def parse_chat(spec: BackendSpec, body: bytes, /) -> ChatCompletion:
    """A ``text_completion`` answer as a chat completion."""
    data = _json(spec, body, "completion")
    choice = _choice(spec, data, body, "completion")
    return ChatCompletion.model_validate(
        {
            "id": str(data.get("id") or "cmpl-llamacpp"),
            "created": int(data.get("created") or time.time()),
            "model": str(data.get("model") or spec.model or "llama.cpp"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": choice.get("text") or ""},
                    "finish_reason": _finish(choice.get("finish_reason")),
                }
            ],
            "usage": data.get("usage"),
        }
    )


class ChunkDecoder(SSEChunkDecoder):
    """SSE ``text_completion`` events -> chat chunks (the first one carries the role)."""

    __slots__ = ("_started",)

    def __init__(self, spec: BackendSpec) -> None:
        super().__init__(spec)
        self._started = False

    def parse(self, event: bytes) -> ChatCompletionChunk | None:
        """One event as a chunk; ``None`` for ``[DONE]`` and anything after it."""
        if self._done or event.startswith(b"[DONE]"):
            self._done = True
            return None
        data = _json(self._spec, event, "stream event")
        choice = _choice(self._spec, data, event, "stream event")
        reason = choice.get("finish_reason")
        delta: dict[str, Any] = {"content": choice.get("text") or ""}
        if not self._started:
            delta["role"] = "assistant"
            self._started = True
        if reason is not None:
            self._finished = True
        return ChatCompletionChunk.model_validate(
            {
                "id": str(data.get("id") or "cmpl-llamacpp"),
                "created": int(data.get("created") or 0),
                "model": str(data.get("model") or self._spec.model or "llama.cpp"),
                "choices": [
                    {
                        "index": 0,
                        "delta": delta,
                        "finish_reason": None if reason is None else _finish(reason),
                    }
                ],
            }
        )


def map_error(
    spec: BackendSpec, status: int, headers: Mapping[str, str], body: bytes, /
) -> StatusError:
    """A non-2xx answer: llama.cpp's OpenAI-shaped error object, typed by status."""
    return error_from_status(status, headers, body, backend=spec.name)


def build_models(spec: BackendSpec, /) -> HTTPRequest:
    """``GET /v1/models`` (the one model the server loaded)."""
    return HTTPRequest(
        method="GET",
        url=spec.base_url + "/v1/models",
        headers=_headers(spec, None, "application/json"),
        backend=spec.name,
    )


def parse_models(spec: BackendSpec, body: bytes, /) -> ModelList:
    """The model list (``owned_by``/``created`` filled in where the server leaves them out)."""
    data = _json(spec, body, "model list")
    models = data.get("data") if isinstance(data, dict) else None
    if not isinstance(models, list):
        raise ProtocolError("malformed /v1/models answer", backend=spec.name)
    return ModelList.model_validate(
        {
            "data": [
                {"created": 0, "owned_by": "llama.cpp", **m}
                for m in models
                if isinstance(m, dict) and isinstance(m.get("id"), str)
            ]
        }
    )


def build_health(spec: BackendSpec, /) -> HTTPRequest:
    """The health probe: the model list (both servers answer it once the model is loaded)."""
    return build_models(spec)

"""Codec for Amazon SageMaker endpoints (``sagemaker://endpoint-name?region=us-east-1``).

``InvokeEndpoint`` (``POST /endpoints/{name}/invocations``) answers a whole body;
``InvokeEndpointWithResponseStream`` (``.../invocations-response-stream``) answers an AWS event
stream whose ``PayloadPart`` events carry the container's own streamed bytes, split anywhere.
Every request is signed with SigV4 (signing name ``sagemaker``) by botocore, imported lazily,
with credentials from botocore's standard chain (resolved once, then cached: the credentials
object refreshes itself). Protocol facts: ``shared/protocols/sagemaker.md``; for users:
``docs/backends/sagemaker.md``.

Two payload dialects (``?dialect=``), since the container alone decides the body format:

* ``messages`` (default): the OpenAI chat body (TGI >= 2 and LMI/vLLM containers); streamed
  payloads are SSE ``data:`` lines (TGI) or JSON lines (LMI), told apart line by line;
* ``tgi``: ``{"inputs": prompt, "parameters": {...}}`` with the prompt built from the messages by
  a built-in chat template (``?chat_template=chatml|llama3``); answers are
  ``[{"generated_text": ...}]`` (TGI) or ``{"generated_text": ...}`` (LMI), streams are token
  events.

Sans-IO apart from credentials: resolving them (first use) and refreshing them (near expiry)
may do I/O (files, IMDS, STS, SSO). :func:`prepare` does both and is safe to call from a worker
thread before ``build_*`` so that an event loop never waits on it.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Mapping
from typing import Any

import pydantic_core

from llmrouter._http import HTTPRequest
from llmrouter._request import ChatRequest
from llmrouter._status import error_from_status
from llmrouter.backends import Capabilities, openai_compat
from llmrouter.backends._eventstream import EventStreamDecoder, EventStreamError, Message
from llmrouter.backends._sagemaker_tgi import CHAT_TEMPLATES, render_prompt, tgi_body
from llmrouter.backends.declaration import BackendDeclaration, Option, URLParts
from llmrouter.backends.sigv4 import (
    needs_prepare,
    prepare,
    reset_credentials,
    session,
    signed,
)
from llmrouter.config import BackendSpec
from llmrouter.errors import (
    AuthenticationError,
    BackendConnectionError,
    BackendTimeoutError,
    BadRequestError,
    ConfigError,
    ContextLengthError,
    InvalidRequestError,
    NotFoundError,
    ProtocolError,
    RateLimitError,
    ServerError,
    StatusError,
)
from llmrouter.types import ChatCompletion, ChatCompletionChunk, Model, ModelList

__all__ = [
    "CAPABILITIES", "CHAT_TEMPLATES", "DIALECTS", "OPTIONS", "ChunkDecoder", "build_chat",
    "build_health", "build_models", "control_url", "endpoint_name", "map_error", "needs_prepare",
    "parse_chat", "parse_models", "prepare", "render_prompt", "reset_credentials", "runtime_url",
]  # fmt: skip

# The default (messages) dialect's: it passes OpenAI fields through to the container (TGI or
# LMI/vLLM), which decides; the tgi dialect refuses what it cannot express (tools, n > 1,
# logprobs, json_object: InvalidRequestError at build time).
CAPABILITIES = Capabilities(
    tools=True,
    tool_choice=True,
    json_object=True,
    json_schema=True,
    stream_usage=True,
    seed=True,
    n=True,  # passed on: LMI/vLLM serve several choices; TGI refuses n > 1 itself (a 424)
    logprobs=True,
    stop=True,
)

# The query options of sagemaker:// URLs (config._SCHEMES must list them).
OPTIONS = frozenset({
    "region", "endpoint_url", "component", "variant", "custom_attributes", "dialect",
    "chat_template", "profile",
})  # fmt: skip
DIALECTS = ("messages", "tgi")

_ENDPOINT_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9])*$")  # max 63 chars (sagemaker.md)
_STREAM_ACCEPT = "application/jsonlines, text/event-stream"  # LMI / TGI (sagemaker.md 6)


def _options(spec: BackendSpec) -> dict[str, str]:
    return dict(spec.options)


def _fail(message: str, param: str) -> InvalidRequestError:
    return InvalidRequestError(f"sagemaker: {message}", param=param)


# ---------------------------------------------------------------------------------------------
# Where requests go


def endpoint_name(spec: BackendSpec) -> str:
    """The endpoint's name (``spec.location``, the URL's host part as written)."""
    name = spec.location
    if not name or len(name) > 63 or not _ENDPOINT_NAME.match(name):
        raise ConfigError(
            f"{spec.name}: expected sagemaker://ENDPOINT-NAME (letters, digits and hyphens, "
            f"at most 63 characters), got {name!r}"
        )
    return name


def _region(spec: BackendSpec, env: Mapping[str, str]) -> str:
    region = _options(spec).get("region") or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if not region:
        # The profile's configured region (~/.aws/config), as boto3 would find it.
        region = session(_options(spec).get("profile") or None).get_config_variable("region")
    if not region:
        raise ConfigError(
            f"{spec.name}: no AWS region: add ?region=REGION to the URL, or set AWS_REGION"
        )
    return str(region)


def _dns_suffix(region: str) -> str:
    return "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"


def _configured_url(env: Mapping[str, str], service_var: str) -> str | None:
    # botocore's service-specific endpoint variables, then the global one; both are ignored when
    # AWS_IGNORE_CONFIGURED_ENDPOINT_URLS is true, as in botocore.
    if env.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() == "true":
        return None
    return env.get(service_var) or env.get("AWS_ENDPOINT_URL") or None


def _checked_url(raw: str, what: str) -> str:
    if not raw.startswith(("http://", "https://")):
        raise ConfigError(f"{what}={raw!r}: expected an http:// or https:// URL")
    return raw.rstrip("/")


def runtime_url(spec: BackendSpec, env: Mapping[str, str] | None = None) -> str:
    """The SageMaker Runtime base URL.

    ``?endpoint_url=`` (a VPC interface endpoint), else ``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME``,
    else ``AWS_ENDPOINT_URL``, else ``https://runtime.sagemaker.{region}.amazonaws.com``.
    """
    env = os.environ if env is None else env
    given = _options(spec).get("endpoint_url")
    if given:
        return _checked_url(given, "endpoint_url")
    configured = _configured_url(env, "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME")
    if configured:
        return _checked_url(configured, "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME")
    region = _region(spec, env)
    return f"https://runtime.sagemaker.{region}.{_dns_suffix(region)}"


def control_url(spec: BackendSpec, env: Mapping[str, str] | None = None) -> str:
    """The SageMaker API (control plane) base URL, for ``DescribeEndpoint``:
    ``AWS_ENDPOINT_URL_SAGEMAKER``, else ``AWS_ENDPOINT_URL``, else
    ``https://api.sagemaker.{region}.amazonaws.com``."""
    env = os.environ if env is None else env
    configured = _configured_url(env, "AWS_ENDPOINT_URL_SAGEMAKER")
    if configured:
        return _checked_url(configured, "AWS_ENDPOINT_URL_SAGEMAKER")
    region = _region(spec, env)
    return f"https://api.sagemaker.{region}.{_dns_suffix(region)}"


def _signing_region(spec: BackendSpec) -> str:
    return _region(spec, os.environ)


# ---------------------------------------------------------------------------------------------
# Requests


def _dialect(spec: BackendSpec) -> str:
    dialect = _options(spec).get("dialect") or "messages"
    if dialect not in DIALECTS:
        raise ConfigError(
            f"{spec.name}: dialect={dialect!r}: expected one of {', '.join(DIALECTS)}"
        )
    return dialect


def _default_models(spec: BackendSpec) -> tuple[str, ...]:
    options = _options(spec)
    return tuple(n for n in (spec.location, options.get("component")) if n)


def _messages_body(spec: BackendSpec, request: ChatRequest, model: str) -> dict[str, Any]:
    body: dict[str, Any] = {"messages": request.messages}
    # The endpoint (or component) name labels the backend; it means nothing to the container
    # (vLLM would reject an unknown name), so only a model named on purpose is sent: ?model=,
    # or the call's model= when the URL pins none (the driver prefers the spec's label).
    defaults = _default_models(spec)
    if model in defaults and request.model:
        model = request.model
    if model and model not in defaults:
        body["model"] = model
    body.update(request.params)
    if request.stream:
        body["stream"] = True  # the container streams only when the body says so (6.1)
    body.update(request.extra_body)
    return body


def _component_headers(spec: BackendSpec) -> dict[str, str]:
    options = _options(spec)
    headers = {}
    if options.get("component"):
        headers["X-Amzn-SageMaker-Inference-Component"] = options["component"]
    if options.get("variant"):
        headers["X-Amzn-SageMaker-Target-Variant"] = options["variant"]
    attributes = options.get("custom_attributes")
    if attributes:
        if len(attributes) > 1024 or not all(" " <= c <= "~" for c in attributes):
            raise ConfigError(
                f"{spec.name}: custom_attributes: expected at most 1024 visible ASCII characters"
            )
        headers["X-Amzn-SageMaker-Custom-Attributes"] = attributes
    return headers


def build_chat(spec: BackendSpec, request: ChatRequest, model: str) -> HTTPRequest:
    """The signed ``InvokeEndpoint`` (or, streaming, ``InvokeEndpointWithResponseStream``)."""
    name = endpoint_name(spec)
    if _dialect(spec) == "tgi":
        payload = tgi_body(spec, request)
    else:
        payload = _messages_body(spec, request, model)
    body = pydantic_core.to_json(payload)
    headers = {"Content-Type": "application/json"}
    if request.stream:
        # The streaming operation's Accept travels as X-Amzn-SageMaker-Accept (sagemaker.md 2).
        headers["X-Amzn-SageMaker-Accept"] = _STREAM_ACCEPT
        path = f"/endpoints/{name}/invocations-response-stream"
    else:
        headers["Accept"] = "application/json"
        path = f"/endpoints/{name}/invocations"
    headers.update(_component_headers(spec))
    headers.update(spec.headers)
    headers.update(request.extra_headers)  # signed with the rest
    url = runtime_url(spec) + path
    return HTTPRequest(
        method="POST",
        url=url,
        headers=signed(spec, url, headers, body, _signing_region(spec)),
        body=body,
        backend=spec.name,
    )


def build_models(spec: BackendSpec) -> HTTPRequest:
    """A signed ``DescribeEndpoint`` on the SageMaker API: read-only, free, and it never
    reaches the container (the runtime API has no listing or health route)."""
    body = pydantic_core.to_json({"EndpointName": endpoint_name(spec)})
    headers = {
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Target": "SageMaker.DescribeEndpoint",
        "Accept": "application/json",
    }
    url = control_url(spec) + "/"
    return HTTPRequest(
        method="POST",
        url=url,
        headers=signed(spec, url, headers, body, _signing_region(spec)),
        body=body,
        backend=spec.name,
    )


def build_health(spec: BackendSpec) -> HTTPRequest:
    """The health probe: ``DescribeEndpoint`` (credentials valid, endpoint exists; it does
    not wake the container nor prove it healthy)."""
    return build_models(spec)


# ---------------------------------------------------------------------------------------------
# Errors (sagemaker.md section 4)

_THROTTLING = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
    "TooManyRequestsException", "ProvisionedThroughputExceededException",
    "TransactionInProgressException", "RequestLimitExceeded", "BandwidthLimitExceeded",
    "LimitExceededException", "RequestThrottled", "SlowDown", "PriorRequestNotComplete",
    "EC2ThrottledException", "ModelNotReadyException",
})  # fmt: skip
_AUTH = frozenset({
    "AccessDeniedException", "AccessDenied", "UnrecognizedClientException",
    "InvalidSignatureException", "SignatureDoesNotMatch", "IncompleteSignature",
    "InvalidClientTokenId", "MissingAuthenticationToken", "ExpiredToken",
    "ExpiredTokenException",
})  # fmt: skip
_NOT_FOUND = re.compile(
    r"(Endpoint|Inference ?Component|Variant) .* (not found|does not exist)"
    r"|Could not find (endpoint|inference component)",
    re.IGNORECASE,
)
_TGI_CONTEXT = ("`inputs` must have less than", "`max_new_tokens` must be <=")


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None


def _error_code(headers: Mapping[str, str], data: Any, status: int) -> str:
    """botocore's rule (RestJSONParser): ``x-amzn-ErrorType``, else body ``code``/``Code``,
    else ``__type``, else the status; cut at the first ``:`` and after the last ``#``."""
    code = _header(headers, "x-amzn-ErrorType")
    if not code and isinstance(data, dict):
        code = data.get("code") or data.get("Code") or data.get("__type")
    text = str(code) if code else str(status)
    return text.split(":", 1)[0].rsplit("#", 1)[-1]


def map_error(
    spec: BackendSpec, status: int, headers: Mapping[str, str], body: bytes
) -> StatusError:
    """SageMaker's modeled errors -> the typed tree; a ``ModelError`` is mapped like the
    container's own status (``OriginalStatusCode``) and message (``OriginalMessage``)."""
    try:
        data: Any = pydantic_core.from_json(body) if body else None
    except ValueError:
        data = None
    code = _error_code(headers, data, status)
    message = ""
    if isinstance(data, dict):
        message = str(data.get("message") or data.get("Message") or "")
    request_id = _header(headers, "x-amzn-RequestId")
    base = error_from_status(status, headers, body, backend=spec.name)
    message = message or base.message.removeprefix(f"HTTP {status}: ")
    fields: dict[str, Any] = {
        "backend": spec.name,
        "body": data if data is not None else base.body,
        "retry_after": base.retry_after,
        "request_id": request_id or base.request_id,
        "error_type": code,
    }
    if code == "ModelError" or (status == 424 and isinstance(data, dict)):
        original = data.get("OriginalStatusCode") if isinstance(data, dict) else None
        original_message = data.get("OriginalMessage") if isinstance(data, dict) else None
        if isinstance(original, int) and 400 <= original <= 599:
            inner = error_from_status(
                original, {}, str(original_message or "").encode(), backend=spec.name
            )
            cls: type[StatusError] = type(inner)
            if cls is BadRequestError and any(m in inner.message for m in _TGI_CONTEXT):
                cls = ContextLengthError
            if cls is StatusError:
                cls = BadRequestError if original < 500 else ServerError
            detail = inner.message.removeprefix(f"HTTP {original}: ")
            return cls(
                f"ModelError: the container answered {original}: {detail}",
                status_code=original,
                **fields,
            )
        return ServerError(f"ModelError: {message}", status_code=status, **fields)
    if code in _THROTTLING:
        return RateLimitError(f"{code}: {message}", status_code=status, **fields)
    if code in _AUTH or status in (401, 403):
        return AuthenticationError(f"{code}: {message}", status_code=status, **fields)
    if _NOT_FOUND.search(message) and status in (400, 404):
        return NotFoundError(f"{code}: {message}", status_code=status, **fields)
    if code == "InternalDependencyException" or status == 530:
        # The endpoint depends on a service that failed; retrying soon rarely helps (4).
        return ServerError(f"{code}: {message}", status_code=status, retryable=False, **fields)
    if status >= 500:
        return ServerError(f"{code}: {message}", status_code=status, **fields)
    cls = type(base)
    if status == 400 or code == "ValidationError":
        cls = ContextLengthError if isinstance(base, ContextLengthError) else BadRequestError
    return cls(f"{code}: {message}", status_code=status, **fields)


# ---------------------------------------------------------------------------------------------
# Responses


def _new_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def _label(spec: BackendSpec) -> str:
    return spec.model or _options(spec).get("component") or spec.location


def _load(spec: BackendSpec, raw: bytes, what: str) -> Any:
    try:
        return pydantic_core.from_json(raw)
    except ValueError:
        raise ProtocolError(f"{what} is not JSON: {raw[:200]!r}", backend=spec.name) from None


# TGI's ``error_type`` (and LMI's ``code``) -> the status the same error has outside a body.
_TGI_ERROR_STATUS = {"validation": 422, "overloaded": 429, "generation": 424}


def _raise_generate_error(spec: BackendSpec, data: Any) -> None:
    if not isinstance(data, dict) or not data.get("error"):
        return
    error = data["error"]
    status = _TGI_ERROR_STATUS.get(str(data.get("error_type") or ""), 0)
    code = error.get("http_status_code") or error.get("code") if isinstance(error, dict) else None
    code = code or data.get("code")
    if not status:
        status = code if isinstance(code, int) and 400 <= code <= 599 else 500
    if status == 424:
        status = 500  # the model failed while generating: a server fault, not the request's
    raise error_from_status(status, {}, pydantic_core.to_json(data), backend=spec.name)


_FINISH = {"length": "length", "eos_token": "stop", "stop_sequence": "stop", "stop": "stop"}


def _finish(spec: BackendSpec, details: Any) -> str:
    reason = details.get("finish_reason") if isinstance(details, dict) else None
    if reason == "error":  # LMI's last line after a failure mid-generation (sagemaker.md 6.2)
        raise ServerError(
            "the model failed during generation (finish_reason: error)",
            backend=spec.name,
            status_code=500,
            body=details,
        )
    return _FINISH.get(str(reason), "stop") if reason else "stop"


def _usage(details: Any) -> dict[str, int] | None:
    if not isinstance(details, dict) or not isinstance(details.get("generated_tokens"), int):
        return None
    completion = details["generated_tokens"]
    prompt = details.get("input_length")
    if not isinstance(prompt, int):
        prefill = details.get("prefill")
        prompt = len(prefill) if isinstance(prefill, list) else 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _parse_generate(spec: BackendSpec, body: bytes) -> ChatCompletion:
    data = _load(spec, body, "generate answer")
    _raise_generate_error(spec, data)
    if isinstance(data, list) and data:
        data = data[0]
    if not isinstance(data, dict) or not isinstance(data.get("generated_text"), str):
        raise ProtocolError(
            f"expected [{{'generated_text': ...}}] or {{'generated_text': ...}}: {body[:200]!r}",
            backend=spec.name,
        )
    details = data.get("details")
    result: dict[str, Any] = {
        "id": _new_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": _label(spec),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": data["generated_text"]},
                "finish_reason": _finish(spec, details),
            }
        ],
    }
    usage = _usage(details)
    if usage is not None:
        result["usage"] = usage
    return ChatCompletion.model_validate(result)


def parse_chat(spec: BackendSpec, body: bytes) -> ChatCompletion:
    """An ``InvokeEndpoint`` answer -> :class:`ChatCompletion` (per the dialect)."""
    if _dialect(spec) == "tgi":
        return _parse_generate(spec, body)
    return openai_compat.parse_chat(spec, body)


def parse_models(spec: BackendSpec, body: bytes) -> ModelList:
    """``DescribeEndpoint`` -> the one model this endpoint (or component) serves."""
    data = _load(spec, body, "DescribeEndpoint answer")
    if not isinstance(data, dict):
        raise ProtocolError("DescribeEndpoint answer is not an object", backend=spec.name)
    created = data.get("CreationTime")
    return ModelList(
        object="list",
        data=[
            Model(
                id=_label(spec),
                created=int(created) if isinstance(created, int | float) else 0,
                owned_by="sagemaker",
            )
        ],
    )


# ---------------------------------------------------------------------------------------------
# Streams

_FAILURE = b"\x00"  # marks a framed stream failure among payload events (never JSON text)
_SSE_FIELDS = (b"event:", b"id:", b"retry:", b":")


class ChunkDecoder:
    """Event-stream bytes -> :class:`ChatCompletionChunk` values, one at a time.

    ``feed`` cuts event-stream messages, concatenates ``PayloadPart`` bytes and frames complete
    lines (a line can span parts, a part can hold several lines): ``data:`` lines (TGI's SSE)
    and bare JSON lines (LMI) alike; blank lines and SSE comments carry nothing. An exception
    message (``ModelStreamError``, ``InternalStreamFailure``) or a broken frame becomes an event
    that ``parse`` raises where it stands, after the content before it.
    """

    __slots__ = (
        "_broken", "_created", "_done", "_finished", "_frames", "_id", "_inner", "_line",
        "_role_sent", "_spec", "_tgi",
    )  # fmt: skip

    def __init__(self, spec: BackendSpec) -> None:
        self._spec = spec
        self._frames = EventStreamDecoder()
        self._line = b""
        self._broken = False
        self._tgi = _dialect(spec) == "tgi"
        self._inner = openai_compat.ChunkDecoder(spec)
        self._done = False
        self._finished = False
        self._role_sent = False
        self._id = _new_id()
        self._created = int(time.time())

    @property
    def done(self) -> bool:
        """The container's terminator was parsed (``[DONE]``, or TGI's last token event)."""
        return self._done or self._inner.done

    @property
    def finished(self) -> bool:
        """Every choice has a finish reason."""
        return self._finished or self._inner.finished

    def feed(self, data: bytes) -> list[bytes]:
        """Frame more body bytes into payload lines and failure events (not parsed yet)."""
        if self._broken:
            return []
        try:
            messages: list[Message | None] = list(self._frames.feed(data))
        except EventStreamError as exc:
            self._broken = True
            return [_FAILURE + pydantic_core.to_json({"framing": str(exc)})]
        events: list[bytes] = []
        if self._frames.error is not None:  # a bad frame after good ones: those come first
            messages.append(None)
        for message in messages:
            if message is None:
                self._broken = True
                error = str(self._frames.error)
                events.append(_FAILURE + pydantic_core.to_json({"framing": error}))
                break
            kind = message.header(":message-type")
            if kind == "event":
                if message.header(":event-type") == "PayloadPart":
                    events.extend(self._lines(message.payload))
                continue  # an event type added later: nothing for us
            if kind == "exception":
                failure: dict[str, Any] = {"type": message.header(":exception-type")}
                body = message.payload
                try:
                    failure["payload"] = pydantic_core.from_json(body) if body else {}
                except ValueError:
                    failure["payload"] = {"Message": body[:500].decode("utf-8", "replace")}
            else:  # "error" (unmodeled), or a message type that should not be there
                failure = {
                    "type": message.header(":error-code") or f"message type {kind!r}",
                    "payload": {"Message": message.header(":error-message") or ""},
                }
            events.append(_FAILURE + pydantic_core.to_json(failure))
            self._broken = True  # nothing follows an exception (the stream is over)
            break
        return events

    def _lines(self, payload: bytes) -> list[bytes]:
        buffer = self._line + payload if self._line else payload
        lines = buffer.split(b"\n")
        self._line = lines.pop()
        return [e for e in (self._payload_event(line) for line in lines) if e is not None]

    @staticmethod
    def _payload_event(line: bytes) -> bytes | None:
        line = line.strip()
        if not line:
            return None  # SSE's event separator, or LMI's end-of-output line
        if line.startswith(b"data:"):
            value = line[5:]
            return value[1:] if value[:1] == b" " else value
        if line.startswith(_SSE_FIELDS):
            return None
        return line

    def close(self) -> list[bytes]:
        """The body ended: a last line lacking its newline, if it is a whole JSON value."""
        rest, self._line = self._line, b""
        event = self._payload_event(rest)
        if event is None or self._broken:
            return []
        if event.startswith(b"[DONE]"):
            return [event]
        try:
            pydantic_core.from_json(event)
        except ValueError:
            return []  # cut mid-line: check_end reports the short answer
        return [event]

    def parse(self, event: bytes) -> ChatCompletionChunk | None:
        """One payload line as a chunk; raise the typed error of a failure event."""
        if event[:1] == _FAILURE:
            raise self._failure(pydantic_core.from_json(event[1:]))
        if self._tgi:
            return self._parse_token(event)
        return self._inner.parse(event)

    def _failure(self, failure: dict[str, Any]) -> Exception:
        spec = self._spec
        if "framing" in failure:
            return ProtocolError(f"malformed event stream: {failure['framing']}", backend=spec.name)
        kind = str(failure.get("type") or "unknown")
        payload = failure.get("payload")
        payload = payload if isinstance(payload, dict) else {}
        message = str(payload.get("Message") or payload.get("message") or "")
        code = payload.get("ErrorCode")
        text = f"{kind}{f' ({code})' if code else ''}: {message}"
        if code == "ModelInvocationTimeExceeded":
            return BackendTimeoutError(text, backend=spec.name)
        # StreamBroken, InternalStreamFailure ("retry the request"), unmodeled errors: the
        # answer broke off; retried only when no content has reached the caller.
        return BackendConnectionError(text, backend=spec.name)

    def _parse_token(self, event: bytes) -> ChatCompletionChunk | None:
        """One TGI/LMI token event -> a chunk (the last one, with ``generated_text``, ends it)."""
        if self._done:
            return None
        spec = self._spec
        data = _load(spec, event, "stream event")
        _raise_generate_error(spec, data)
        if not isinstance(data, dict):
            raise ProtocolError(
                f"stream event is not an object: {event[:200]!r}", backend=spec.name
            )
        token = data.get("token")
        delta: dict[str, Any] = {}
        if not self._role_sent:
            delta = {"role": "assistant", "content": ""}
            self._role_sent = True
        if isinstance(token, dict):
            special = token.get("special") or token.get("special_token")
            if isinstance(token.get("text"), str) and token["text"] and not special:
                delta["content"] = token["text"]
        elif token is not None:
            raise ProtocolError(
                f"stream event token is not an object: {event[:200]!r}", backend=spec.name
            )
        choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": None}
        chunk: dict[str, Any] = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": _label(spec),
            "choices": [choice],
        }
        details = data.get("details")
        if data.get("generated_text") is not None or isinstance(details, dict):
            choice["finish_reason"] = _finish(spec, details)
            self._done = self._finished = True
            usage = _usage(details)
            if usage is not None:
                chunk["usage"] = usage
        elif not delta:
            return None
        return ChatCompletionChunk.model_validate(chunk)

    def check_end(self) -> None:
        """Every event is parsed and the body is over: complain if the answer was cut short."""
        if not self.done and not self.finished:
            raise BackendConnectionError(
                "stream ended before the container finished its answer", backend=self._spec.name
            )


def _sagemaker_configure(spec: BackendSpec, url: URLParts, env: Mapping[str, str]) -> BackendSpec:
    """``sagemaker://ENDPOINT-NAME?region=...``: the host part is the endpoint's name, as
    written (``hostname`` would lower-case it); the codec resolves region, URL and credentials
    when it signs (they may come from the environment or AWS config files)."""
    import dataclasses

    name = url.netloc
    if url.transport or url.path.strip("/") or not name:
        raise ConfigError(
            f"backend URL {spec.name!r}: expected sagemaker://ENDPOINT-NAME?region=REGION"
        )
    if len(name) > 63 or not _ENDPOINT_NAME.fullmatch(name):
        raise ConfigError(
            f"backend URL {spec.name!r}: the endpoint name takes letters, digits and hyphens "
            "(at most 63 characters)"
        )
    # One model per endpoint (or inference component): its name labels the backend, so no
    # discovery request is needed; the codec sends only a ?model= given on purpose.
    model = spec.model or url.query.get("component") or name
    return dataclasses.replace(spec, location=name, model=model)


BACKEND = BackendDeclaration(
    "sagemaker",
    description="an AWS SageMaker endpoint (SigV4)",
    transport="https",
    location="name",
    options=(
        Option("region"),
        Option("endpoint_url"),
        Option("component"),
        Option("variant"),
        Option("custom_attributes"),
        Option("dialect", choices=DIALECTS),
        Option("chat_template", choices=tuple(CHAT_TEMPLATES)),
        Option("profile"),
    ),
    configure=_sagemaker_configure,
    capabilities=CAPABILITIES,
)

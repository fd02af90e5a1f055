"""A loopback fake of Amazon Bedrock Runtime's Converse and ConverseStream APIs.

Built from the published Bedrock API reference (``docs/backends/bedrock.md`` lists the pages:
Converse, ConverseStream, ConverseStreamOutput, ContentBlock, ToolConfiguration, the error
codes) and the AWS event-stream framing (``shared/protocols/sagemaker.md`` section 3)::

    with BedrockFake() as fake:
        fake.script(AwsError(429, "ThrottlingException", "Too many requests"))
        client = llmrouter.Client(fake.url())   # bedrock://MODEL?region=...&endpoint=...

* Every request must carry a valid SigV4 signature for signing name ``bedrock``: the fake
  recomputes it with botocore from the raw request (path as received, percent-encoding kept)
  and its known test credentials; a failure is AWS's 403 (``InvalidSignatureException``,
  ``UnrecognizedClientException``), listed in ``fake.auth_failures``.
* ``POST /model/{modelId}/converse``: the body is validated as Bedrock does (a 400
  ``ValidationException`` names what is wrong: alternating roles starting with ``user``, one
  member per content block, ``toolResult`` needing a ``toolConfig``, ``toolChoice`` needing
  tools, inference parameters' types, image formats and base64, unknown fields); an unknown
  model id is a 400 "The provided model identifier is invalid.". The answer is the scripted
  :class:`Reply` (or :class:`AwsError`, ``Error``, ``Close``, ``Stall``), else one computed as
  ``OpenAIFake(computed=True)`` computes it (echo, stop sequences, ``maxTokens``, forced tools
  with arguments sampled from their schema) and written in Converse's shape.
* ``POST /model/{modelId}/converse-stream``: the same answer as ``messageStart``,
  ``contentBlockStart``/``contentBlockDelta``/``contentBlockStop``, ``messageStop`` and
  ``metadata`` event-stream messages (each payload padded with ``p`` as Bedrock does), the
  bytes split at arbitrary (seeded) boundaries; optionally an exception message
  (``modelStreamErrorException``...) after the content, garbage bytes, or a cut connection.
* ``GET /foundation-models``: ``ListFoundationModels``.

The frames are encoded by ``tests.fakes.sagemaker_fake.frame``, independently of the code under
test.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import json
import random
import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from tests.fakes import openai_fake
from tests.fakes.openai_fake import (
    Close,
    Completion,
    Error,
    OpenAIFake,
    Recorded,
    Stall,
    Stream,
    _Conn,
)
from tests.fakes.sagemaker_fake import AwsError, _head, frame

ACCESS_KEY = "AKIDBEDROCKFAKE"
SECRET_KEY = "fake/bedrock+secret/for/loopback/tests/0"
REGION = "us-east-1"
ACCOUNT = "123456789012"
MODEL = "anthropic.claude-3-5-haiku-20241022-v1:0"
PROFILE = "us.anthropic.claude-3-5-haiku-20241022-v1:0"
ARN = f"arn:aws:bedrock:{REGION}:{ACCOUNT}:inference-profile/{PROFILE}"
REQUEST_ID = "3f1c2b7e-0000-4000-8000-0000bedrock0"

_TOP_LEVEL = frozenset(
    {"messages", "system", "inferenceConfig", "toolConfig", "guardrailConfig",
     "additionalModelRequestFields", "additionalModelResponseFieldPaths", "promptVariables",
     "requestMetadata", "performanceConfig"}
)  # fmt: skip
_BLOCK_MEMBERS = frozenset(
    {"text", "image", "document", "video", "toolUse", "toolResult", "guardContent",
     "reasoningContent", "cachePoint"}
)  # fmt: skip
_ROUTE = re.compile(r"^/model/(?P<model>[^/]+)/(?P<op>converse|converse-stream)$")


@dataclass
class Reply:
    """A scripted Converse answer, written as JSON or as an event stream per the operation.

    Attributes:
        content: Converse content blocks (``{"text": ...}``, ``{"toolUse": {...}}``).
        stop_reason: ``stopReason``.
        usage: ``usage`` (``inputTokens``/``outputTokens``/``totalTokens``).
        failure: streams: ``(exception type, message)`` sent after the content, instead of
            ``messageStop`` and ``metadata``.
        garbage: streams: raw bytes sent after the content (a frame with a bad CRC...).
        cut: streams: drop the connection after the content, without ``messageStop``.
        seed: the seed of the byte boundaries the stream is split at.
    """

    content: list[dict[str, Any]]
    stop_reason: str = "end_turn"
    usage: dict[str, int] = field(
        default_factory=lambda: {"inputTokens": 9, "outputTokens": 3, "totalTokens": 12}
    )
    failure: tuple[str, str] | None = None
    garbage: bytes = b""
    cut: bool = False
    seed: int = 0


def text_reply(*pieces: str, **kw: Any) -> Reply:
    """A reply whose text streams as these pieces (one delta each)."""
    reply = Reply(content=[{"text": "".join(pieces)}], **kw)
    reply.pieces = list(pieces)  # type: ignore[attr-defined]
    return reply


# ---------------------------------------------------------------------------------------------
# SigV4 (botocore, from the raw request)

_AUTH = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<akid>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request, SignedHeaders=(?P<signed>[a-z0-9;-]+), "
    r"Signature=(?P<sig>[0-9a-f]{64})"
)


def verify_sigv4(
    request: Recorded, secrets: dict[str, str], region: str, service: str = "bedrock"
) -> tuple[str, str] | None:
    """``(error code, message)`` when the request's signature is not valid, else ``None``."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    headers = request.headers
    match = _AUTH.fullmatch(headers.get("authorization", ""))
    if match is None:
        return "MissingAuthenticationTokenException", "Missing Authentication Token"
    amz_date = headers.get("x-amz-date", "")
    if not re.fullmatch(r"\d{8}T\d{6}Z", amz_date) or match["date"] != amz_date[:8]:
        return "IncompleteSignature", "X-Amz-Date missing or not matching the credential scope"
    if abs(calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ")) - time.time()) > 900:
        return "InvalidSignatureException", "Signature expired"
    if match["akid"] not in secrets:
        return (
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        )
    if match["service"] != service or match["region"] != region:
        return "InvalidSignatureException", (
            f"Credential should be scoped to a valid region and service ({region}/{service})"
        )
    signed = match["signed"].split(";")
    must = {"host", "x-amz-date"} | {
        n for n in headers if n in ("content-type", "x-amz-security-token")
    }
    if not must <= set(signed) or signed != sorted(signed):
        return "InvalidSignatureException", f"headers not signed: {sorted(must - set(signed))}"
    aws = AWSRequest(
        method=request.method,
        url=f"http://{headers['host']}{request.path}",
        data=request.body,
        headers={name: headers[name] for name in signed if name in headers},
    )
    aws.context["timestamp"] = amz_date
    creds = Credentials(match["akid"], secrets[match["akid"]], headers.get("x-amz-security-token"))
    signer = SigV4Auth(creds, service, region)
    expected = signer.signature(signer.string_to_sign(aws, signer.canonical_request(aws)), aws)
    if expected != match["sig"]:
        return "InvalidSignatureException", (
            "The request signature we calculated does not match the signature you provided."
        )
    return None


# ---------------------------------------------------------------------------------------------
# Validation (ValidationException messages in Bedrock's style)


def validate_converse(body: Any) -> str | None:
    """The ValidationException message Bedrock would answer, or ``None``."""
    if not isinstance(body, dict):
        return "Malformed input request, please reformat your input and try again."
    unknown = sorted(set(body) - _TOP_LEVEL)
    if unknown:
        return f"Malformed input request: extraneous key [{unknown[0]}] is not permitted"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "A conversation must start with a user message. Try again with a conversation that starts with a user message."  # noqa: E501
    has_tools = bool((body.get("toolConfig") or {}).get("tools"))
    use_ids: set[str] = set()
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            return f"1 validation error detected: Value at 'messages.{i + 1}.member.role' failed to satisfy constraint"  # noqa: E501
        expected = "user" if i % 2 == 0 else "assistant"
        if role != expected:
            return "A conversation must alternate between user and assistant roles. Make sure the conversation alternates between user and assistant roles and try again."  # noqa: E501
        content = message.get("content")
        if not isinstance(content, list) or not content:
            return f"The content field in the Message object at messages.{i} is empty. Add a ContentBlock object to the content field and try again."  # noqa: E501
        for j, block in enumerate(content):
            problem = _validate_block(block, role, i, j, has_tools, use_ids)
            if problem:
                return problem
    for j, block in enumerate(body.get("system") or []):
        if not isinstance(block, dict) or not isinstance(block.get("text"), str):
            return f"Malformed input request: system.{j} must have a text member"
    config = body.get("inferenceConfig") or {}
    if not isinstance(config.get("maxTokens", 1), int) or config.get("maxTokens", 1) < 1:
        return "1 validation error detected: Value at 'inferenceConfig.maxTokens' failed to satisfy constraint: Member must have value greater than or equal to 1"  # noqa: E501
    for name in ("temperature", "topP"):
        value = config.get(name, 0.5)
        if not isinstance(value, int | float) or not 0 <= value <= 1:
            return f"1 validation error detected: Value at 'inferenceConfig.{name}' failed to satisfy constraint"  # noqa: E501
    stops = config.get("stopSequences", [])
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        return "Malformed input request: stopSequences must be a list of non-empty strings"
    tool_config = body.get("toolConfig")
    if tool_config is not None:
        tools = tool_config.get("tools")
        if not isinstance(tools, list) or not tools:
            return "The toolConfig field must be defined when using toolUse and toolResult content blocks."  # noqa: E501
        for k, tool in enumerate(tools):
            spec = tool.get("toolSpec") if isinstance(tool, dict) else None
            if (
                not isinstance(spec, dict)
                or not spec.get("name")
                or "json" not in (spec.get("inputSchema") or {})
            ):
                return f"Malformed input request: toolConfig.tools.{k} needs toolSpec.name and toolSpec.inputSchema.json"  # noqa: E501
        choice = tool_config.get("toolChoice")
        if choice is not None:
            names = {t["toolSpec"]["name"] for t in tools}
            if (
                not isinstance(choice, dict)
                or len(choice) != 1
                or next(iter(choice)) not in ("auto", "any", "tool")
            ):
                return (
                    "Malformed input request: toolChoice must have exactly one of auto, any, tool"
                )
            if "tool" in choice and choice["tool"].get("name") not in names:
                return "The tool named in toolChoice is not defined in toolConfig.tools."
    return None


def _validate_block(
    block: Any, role: str, i: int, j: int, has_tools: bool, use_ids: set[str]
) -> str | None:
    where = f"messages.{i}.content.{j}"
    members = set(block) & _BLOCK_MEMBERS if isinstance(block, dict) else set()
    if not isinstance(block, dict) or len(members) != 1 or len(block) != 1:
        return f"Malformed input request: {where} must have exactly one member"
    (kind,) = members
    value = block[kind]
    if kind == "text" and (not isinstance(value, str) or not value):
        return f"The text field in the ContentBlock object at {where} is blank. Add text to the text field, and try again."  # noqa: E501
    if kind == "image":
        if value.get("format") not in ("png", "jpeg", "gif", "webp"):
            return f"Malformed input request: {where}.image.format must be png, jpeg, gif or webp"
        try:
            base64.b64decode(value["source"]["bytes"], validate=True)
        except (KeyError, TypeError, binascii.Error):
            return f"Malformed input request: {where}.image.source.bytes is not valid base64"
    if kind in ("toolUse", "toolResult") and not has_tools:
        return (
            "The toolConfig field must be defined when using toolUse and toolResult content blocks."
        )
    if kind == "toolUse":
        if role != "assistant" or not isinstance(value.get("input"), dict):
            return f"Malformed input request: {where}.toolUse needs an object input, from the assistant"  # noqa: E501
        use_ids.add(value.get("toolUseId"))
    if kind == "toolResult" and (role != "user" or value.get("toolUseId") not in use_ids):
        return (
            f"The toolResult blocks at messages.{i}.content do not match the toolUse blocks "
            "of the previous turn."
        )
    return None


# ---------------------------------------------------------------------------------------------
# Computed answers: the Converse body seen as an OpenAI body, answered by openai_fake


def _text(blocks: list[dict[str, Any]]) -> str:
    return " ".join(b["text"] for b in blocks if "text" in b)


def as_openai(body: dict[str, Any], model: str) -> dict[str, Any]:
    """The OpenAI chat body that means what this Converse body means."""
    messages: list[dict[str, Any]] = []
    if body.get("system"):
        messages.append({"role": "system", "content": _text(body["system"])})
    for message in body["messages"]:
        blocks = message["content"]
        results = [b["toolResult"] for b in blocks if "toolResult" in b]
        for result in results:
            text = _text(result.get("content") or [])
            messages.append({"role": "tool", "tool_call_id": result["toolUseId"], "content": text})
        uses = [b["toolUse"] for b in blocks if "toolUse" in b]
        text = _text(blocks)
        if message["role"] == "assistant":
            entry: dict[str, Any] = {"role": "assistant", "content": text or None}
            if uses:
                entry["tool_calls"] = [
                    {"id": u["toolUseId"], "type": "function",
                     "function": {"name": u["name"], "arguments": json.dumps(u["input"])}}
                    for u in uses
                ]  # fmt: skip
            messages.append(entry)
        elif text or not results:
            messages.append({"role": "user", "content": text})
    out: dict[str, Any] = {"model": model, "messages": messages}
    config = body.get("inferenceConfig") or {}
    if "maxTokens" in config:
        out["max_tokens"] = config["maxTokens"]
    if config.get("stopSequences"):
        out["stop"] = config["stopSequences"]
    tool_config = body.get("toolConfig") or {}
    if tool_config.get("tools"):
        out["tools"] = [
            {"type": "function", "function": {"name": t["toolSpec"]["name"],
                                               "parameters": t["toolSpec"]["inputSchema"]["json"]}}
            for t in tool_config["tools"]
        ]  # fmt: skip
        choice = tool_config.get("toolChoice") or {}
        if "any" in choice:
            out["tool_choice"] = "required"
        elif "tool" in choice:
            out["tool_choice"] = {"type": "function", "function": {"name": choice["tool"]["name"]}}
    return out


_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


def computed_reply(body: dict[str, Any], model: str) -> Reply:
    openai_body = as_openai(body, model)
    answer = openai_fake.computed_answer(openai_body)
    assert isinstance(answer, Completion)
    content: list[dict[str, Any]] = []
    if answer.content:
        content.append({"text": answer.content})
    for call in answer.tool_calls or []:
        fn = call["function"]
        use = {
            "toolUseId": "tooluse_" + call["id"],
            "name": fn["name"],
            "input": json.loads(fn["arguments"]),
        }
        content.append({"toolUse": use})
    usage = answer.usage or {}
    reply = Reply(
        content=content,
        stop_reason=_STOP[answer.finish_reason],
        usage={
            "inputTokens": usage.get("prompt_tokens", 0),
            "outputTokens": usage.get("completion_tokens", 0),
            "totalTokens": usage.get("total_tokens", 0),
        },
    )
    if answer.content:
        reply.pieces = re.findall(r"\S+\s*|\s+", answer.content)  # type: ignore[attr-defined]
    return reply


# ---------------------------------------------------------------------------------------------
# Wire shapes


def converse_json(reply: Reply) -> dict[str, Any]:
    return {
        "output": {"message": {"role": "assistant", "content": reply.content}},
        "stopReason": reply.stop_reason,
        "usage": reply.usage,
        "metrics": {"latencyMs": 42},
    }


def event(kind: str, payload: dict[str, Any]) -> bytes:
    """One ConverseStream event message (payload padded with ``p``, as Bedrock pads it)."""
    data = {**payload, "p": "abcdefghijklmnopqrstuvwxyzABCDEF"[: 5 + len(kind) % 20]}
    headers = {":event-type": kind, ":content-type": "application/json", ":message-type": "event"}
    return frame(headers, json.dumps(data).encode())


def exception(kind: str, message: str) -> bytes:
    headers = {
        ":exception-type": kind,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return frame(headers, json.dumps({"message": message}).encode())


def stream_events(reply: Reply) -> list[bytes]:
    """The events of ``reply`` (up to the content when it fails, is garbled or cut)."""
    events = [event("messageStart", {"role": "assistant"})]
    for index, block in enumerate(reply.content):
        if "text" in block:
            pieces = getattr(reply, "pieces", None) or [block["text"]]
            for piece in pieces:
                events.append(
                    event(
                        "contentBlockDelta", {"contentBlockIndex": index, "delta": {"text": piece}}
                    )
                )
        elif "toolUse" in block:
            use = block["toolUse"]
            start = {"toolUse": {"toolUseId": use["toolUseId"], "name": use["name"]}}
            events.append(event("contentBlockStart", {"contentBlockIndex": index, "start": start}))
            raw = json.dumps(use["input"])
            for part in (raw[: len(raw) // 2], raw[len(raw) // 2 :]):
                delta = {"toolUse": {"input": part}}
                events.append(
                    event("contentBlockDelta", {"contentBlockIndex": index, "delta": delta})
                )
        events.append(event("contentBlockStop", {"contentBlockIndex": index}))
    if reply.failure or reply.garbage or reply.cut:
        if reply.failure:
            events.append(exception(*reply.failure))
        return events
    events.append(event("messageStop", {"stopReason": reply.stop_reason}))
    events.append(event("metadata", {"usage": reply.usage, "metrics": {"latencyMs": 42}}))
    return events


def split(data: bytes, seed: int, max_piece: int = 23) -> list[bytes]:
    """``data`` cut at arbitrary (seeded) byte boundaries."""
    rng = random.Random(seed)
    pieces, pos = [], 0
    while pos < len(data):
        size = rng.randint(1, max_piece)
        pieces.append(data[pos : pos + size])
        pos += size
    return pieces


Answer = Reply | AwsError | Error | Close | Stall


class BedrockFake(OpenAIFake):
    """The fake Bedrock Runtime; a context manager running on a background thread.

    Attributes:
        models: the model ids (and inference-profile ids, and ARNs) that exist.
        secrets: access key id -> secret key accepted.
        auth_failures: ``(code, message)`` of every rejected signature.
    """

    def __init__(self, models: list[str] | None = None, region: str = REGION) -> None:
        super().__init__(models=[])
        self.models = list(models) if models is not None else [MODEL, PROFILE, ARN]
        self.region = region
        self.secrets = {ACCESS_KEY: SECRET_KEY}
        self.auth_failures: list[tuple[str, str]] = []

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, written: str = MODEL, **query: str) -> str:
        """A ``bedrock://`` URL for this fake (the model written as given)."""
        extra = "".join(f"&{k}={v}" for k, v in query.items())
        return f"bedrock://{written}?region={self.region}&endpoint={self.endpoint}{extra}"

    @property
    def converse_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.startswith("/model/")]

    def _answer(self, request: Recorded) -> tuple[Answer, bool]:
        problem = verify_sigv4(request, self.secrets, self.region)
        if problem is not None:
            self.auth_failures.append(problem)
            return AwsError(403, *problem), False
        path = request.path.split("?", 1)[0]
        if request.method == "GET" and path == "/foundation-models":
            summaries = [
                {"modelId": m, "modelName": m, "providerName": "Fake"}
                for m in self.models
                if ":" in m
            ]
            return Error(200, {"modelSummaries": summaries}), False
        route = _ROUTE.match(path)
        if request.method != "POST" or route is None:
            return AwsError(404, "UnknownOperationException", "Unknown operation"), False
        streaming = route["op"] == "converse-stream"
        model = unquote(route["model"])
        if model not in self.models:
            return AwsError(
                400, "ValidationException", "The provided model identifier is invalid."
            ), streaming
        try:
            body = json.loads(request.body)
        except ValueError:
            return AwsError(
                400, "SerializationException", "Unexpected token in the JSON body"
            ), streaming
        problem_text = validate_converse(body)
        if problem_text:
            return AwsError(400, "ValidationException", problem_text), streaming
        if self._queue:
            return self._queue.popleft(), streaming  # type: ignore[return-value]
        return computed_reply(body, model), streaming

    async def _respond(self, conn: _Conn, request: Recorded) -> bool:
        answer, streaming = self._answer(request)
        if isinstance(answer, Close):
            return False
        if isinstance(answer, Stall):
            await self._until_hangup(conn, None)
        base = {"x-amzn-RequestId": REQUEST_ID}
        if isinstance(answer, Reply) and streaming:
            data = b"".join(stream_events(answer)) + answer.garbage
            headers = {**base, "Content-Type": "application/vnd.amazon.eventstream"}
            return await self._stream(
                conn, Stream(split(data, answer.seed), cut=answer.cut, headers=headers)
            )
        if isinstance(answer, Reply):
            answer = Error(200, converse_json(answer))
        if isinstance(answer, AwsError):
            raw = json.dumps({"message": answer.message, **answer.fields}).encode()
            head = {
                **base,
                "Content-Type": "application/json",
                "x-amzn-ErrorType": f"{answer.code}:http://internal.amazon.com/coral/com.amazon.bedrock/",
                **answer.headers,
            }
            status = answer.status
        else:
            assert isinstance(answer, Error)
            raw, ctype = answer.encoded()
            head = {**base, "Content-Type": ctype, **answer.headers}
            status = answer.status
        head["Content-Length"] = str(len(raw))
        await conn.write(_head(status, head) + raw)
        return True


__all__ = [
    "ACCESS_KEY", "ARN", "MODEL", "PROFILE", "REGION", "SECRET_KEY", "AwsError", "BedrockFake",
    "Reply", "as_openai", "computed_reply", "converse_json", "event", "exception", "split",
    "stream_events", "text_reply", "validate_converse", "verify_sigv4",
]  # fmt: skip

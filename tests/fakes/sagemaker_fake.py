"""A loopback fake of SageMaker Runtime (and DescribeEndpoint), from shared/protocols/sagemaker.md.

It reuses the socket machinery of :mod:`tests.fakes.openai_fake` (raw asyncio streams on a
background thread) and speaks SageMaker's wire format::

    with SageMakerFake() as fake:
        fake.script(model_error(422, "Input validation error: ..."), Streamed(sse_chat("Hi")))
        client = llmrouter.Client(backends=[fake.spec()])

* Every request must carry a valid SigV4 signature: the fake recomputes it with botocore from
  the raw request and its known test credentials (:data:`ACCESS_KEY`/:data:`SECRET_KEY`),
  checks the scope (date, region, signing name ``sagemaker``), the clock skew and that host,
  x-amz-date, content-type, x-amz-security-token and every ``x-amzn-sagemaker-*`` header are
  signed. A failure answers 403 ``InvalidSignatureException`` / ``UnrecognizedClientException``
  as AWS does, and is listed in ``fake.auth_failures``.
* ``POST /endpoints/{name}/invocations``: JSON (the scripted :class:`Invoked` or
  :class:`AwsError`, else an answer computed from the body: a chat completion for
  ``messages``, ``[{"generated_text": ...}]`` for ``inputs``).
* ``POST /endpoints/{name}/invocations-response-stream``: ``application/vnd.amazon.eventstream``
  frames with correct CRCs; the container output (:class:`Streamed`, or computed) is cut into
  ``PayloadPart`` events at arbitrary points (seeded, deterministic), optionally followed by a
  ``ModelStreamError`` / ``InternalStreamFailure`` exception message.
* ``POST /`` with ``X-Amz-Target: SageMaker.DescribeEndpoint``: the endpoint's description.
* An unknown endpoint is SageMaker's 400 ``ValidationError`` "Endpoint ... not found".

The frames are encoded here, independently of ``llmrouter.backends._eventstream``.
"""

from __future__ import annotations

import calendar
import http
import json
import random
import re
import struct
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

from llmrouter.config import BackendSpec
from tests.fakes.openai_fake import (
    CREATED,
    Close,
    Error,
    OpenAIFake,
    Recorded,
    Stall,
    Stream,
    _Conn,
    chunk,
)

ACCESS_KEY = "AKIDSAGEMAKERFAKE"
SECRET_KEY = "fake/secret+key/for/loopback/tests/only0"
SESSION_TOKEN = "FwoGZXIvYXdzEFAKESESSIONTOKEN"
REGION = "us-east-1"
ENDPOINT = "my-llm-endpoint"
REQUEST_ID = "7b2e4e1a-0000-4000-8000-00000000fake"
ACCOUNT = "123456789012"


# ---------------------------------------------------------------------------------------------
# Scripted answers


@dataclass
class Invoked:
    """A ``200`` InvokeEndpoint answer: ``payload`` JSON-encoded unless bytes."""

    payload: Any
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class StreamFailure:
    """An exception message ending an event stream (``:message-type: exception``)."""

    type: str = "ModelStreamError"
    message: str = "Model stream broke"
    error_code: str | None = "StreamBroken"


@dataclass
class Streamed:
    """A ``200`` event-stream answer carrying the container's ``output`` bytes.

    Attributes:
        output: what the container streamed (SSE or JSON lines), cut into PayloadParts.
        parts: explicit PayloadPart sizes (the rest goes in one last part); else random
            sizes from 1 to ``max_part`` drawn with ``seed``.
        failure: an exception message sent after the parts.
        wire_split: write the HTTP body in pieces of at most this many bytes.
        cut: drop the connection after the frames, without ending the chunked body.
        garbage: raw bytes written after the frames (e.g. a frame with a bad CRC).
    """

    output: bytes
    parts: list[int] | None = None
    seed: int = 0
    max_part: int = 17
    failure: StreamFailure | None = None
    wire_split: int | None = None
    cut: bool = False
    garbage: bytes = b""
    content_type: str = "text/event-stream"


@dataclass
class AwsError:
    """A rest-json error: ``x-amzn-ErrorType`` header, ``{"message", ...fields}`` body."""

    status: int
    code: str
    message: str
    fields: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


def model_error(original_status: int, original_message: str) -> AwsError:
    """SageMaker's 424 ``ModelError``: the container answered ``original_status``."""
    return AwsError(
        424,
        "ModelError",
        f"Received client error ({original_status}) from primary with message "
        f'"{original_message}". See https://us-east-1.console.aws.amazon.com/cloudwatch/ '
        "in account 123456789012 for more information.",
        {
            "OriginalStatusCode": original_status,
            "OriginalMessage": original_message,
            "LogStreamArn": f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/sagemaker/Endpoints/x",
        },
    )


Answer = Invoked | Streamed | AwsError | Error | Close | Stall


# ---------------------------------------------------------------------------------------------
# Event-stream frames (sagemaker.md section 3), encoded independently of the code under test


def _header(name: str, value: str) -> bytes:
    raw_name, raw = name.encode(), value.encode()
    return bytes([len(raw_name)]) + raw_name + b"\x07" + struct.pack(">H", len(raw)) + raw


def frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message, string headers only, both CRCs correct."""
    head = b"".join(_header(k, v) for k, v in headers.items())
    prelude = struct.pack(">II", 16 + len(head) + len(payload), len(head))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    message = prelude + head + payload
    return message + struct.pack(">I", zlib.crc32(message))


def payload_part(data: bytes) -> bytes:
    return frame(
        {
            ":event-type": "PayloadPart",
            ":content-type": "application/octet-stream",
            ":message-type": "event",
        },
        data,
    )


def failure_frame(failure: StreamFailure) -> bytes:
    body: dict[str, Any] = {"Message": failure.message}
    if failure.error_code is not None:
        body["ErrorCode"] = failure.error_code
    return frame(
        {
            ":exception-type": failure.type,
            ":content-type": "application/json",
            ":message-type": "exception",
        },
        json.dumps(body).encode(),
    )


def split_output(answer: Streamed) -> list[bytes]:
    """The container output cut into PayloadPart payloads, at arbitrary points."""
    data = answer.output
    pieces: list[bytes] = []
    if answer.parts is not None:
        pos = 0
        for size in answer.parts:
            pieces.append(data[pos : pos + size])
            pos += size
        if pos < len(data):
            pieces.append(data[pos:])
        return [p for p in pieces if p]
    rng = random.Random(answer.seed)
    pos = 0
    while pos < len(data):
        size = rng.randint(1, answer.max_part)
        pieces.append(data[pos : pos + size])
        pos += size
    return pieces


# ---------------------------------------------------------------------------------------------
# Container outputs


def sse_chat(*texts: str, finish: str | None = "stop", done: bool = True) -> bytes:
    """TGI's chat stream: ``data:{chunk}`` (no space) events, ``data:[DONE]``."""
    chunks = [chunk({"role": "assistant", "content": ""})]
    chunks += [chunk({"content": t}) for t in texts]
    if finish is not None:
        chunks.append(chunk({}, finish))
    out = b"".join(b"data:" + json.dumps(c).encode() + b"\n\n" for c in chunks)
    return out + (b"data:[DONE]\n\n" if done else b"")


def jsonlines_chat(*texts: str, finish: str | None = "stop", end: bool = True) -> bytes:
    """LMI's chat stream: one chunk per JSON line, an empty line at the end."""
    chunks = [chunk({"role": "assistant", "content": ""})]
    chunks += [chunk({"content": t}) for t in texts]
    if finish is not None:
        chunks.append(chunk({}, finish))
    out = b"".join(json.dumps(c).encode() + b"\n" for c in chunks)
    return out + (b"\n" if end else b"")


def token_events(
    *texts: str, finish: str = "eos_token", sse: bool = True, eos: str | None = "<|im_end|>"
) -> bytes:
    """TGI compat-generate stream (SSE, no [DONE]) or LMI's (JSON lines): one event per token;
    the last (an EOS special token when ``eos``) carries ``generated_text`` and ``details``."""
    events: list[dict[str, Any]] = []
    for i, text in enumerate(texts):
        events.append(
            {
                "index": i,
                "token": {"id": 100 + i, "text": text, "logprob": -0.1, "special": False},
                "generated_text": None,
                "details": None,
            }
        )
    details = {"finish_reason": finish, "generated_tokens": len(texts) + 1, "input_length": 7}
    last = events[-1] if events and eos is None else None
    if eos is not None:
        last = {
            "index": len(texts),
            "token": {"id": 2, "text": eos, "logprob": -0.01, "special": True},
        }
        events.append(last)
    assert last is not None
    last["generated_text"] = "".join(texts)
    last["details"] = details
    if sse:
        return b"".join(b"data:" + json.dumps(e).encode() + b"\n\n" for e in events)
    return b"".join(json.dumps(e).encode() + b"\n" for e in events)


_USER_TURN = re.compile(
    r"<\|im_start\|>user\n(.*?)<\|im_end\|>"
    r"|<\|start_header_id\|>user<\|end_header_id\|>\n\n(.*?)<\|eot_id\|>",
    re.S,
)


def _echo(body: dict[str, Any]) -> str:
    if "inputs" in body:
        turns = _USER_TURN.findall(str(body["inputs"]))
        return "Echo: " + ("".join(turns[-1]) if turns else str(body["inputs"]))
    last = body["messages"][-1].get("content")
    return f"Echo: {last if isinstance(last, str) else '...'}"


# ---------------------------------------------------------------------------------------------
# SigV4 verification (botocore, from the raw request)

_AUTH = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<akid>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request, SignedHeaders=(?P<signed>[a-z0-9;-]+), "
    r"Signature=(?P<sig>[0-9a-f]{64})"
)


def verify_sigv4(
    request: Recorded, secrets: dict[str, str], region: str, now: float | None = None
) -> tuple[str, str] | None:
    """``(error code, message)`` when the request's signature is not valid, else ``None``."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    headers = request.headers
    match = _AUTH.fullmatch(headers.get("authorization", ""))
    if match is None:
        return "MissingAuthenticationToken", "Missing or malformed Authorization header"
    amz_date = headers.get("x-amz-date", "")
    if not re.fullmatch(r"\d{8}T\d{6}Z", amz_date) or match["date"] != amz_date[:8]:
        return "IncompleteSignature", "X-Amz-Date missing or not matching the credential scope"
    skew = abs(calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ")) - time.time())
    if skew > 15 * 60:
        return "InvalidSignatureException", "Signature expired"
    if match["akid"] not in secrets:
        return "UnrecognizedClientException", "The security token included is invalid."
    if match["service"] != "sagemaker" or match["region"] != region:
        return "InvalidSignatureException", (
            f"Credential should be scoped to a valid region and service ({region}/sagemaker)"
        )
    signed = match["signed"].split(";")
    must = {"host", "x-amz-date"} | {
        name
        for name in headers
        if name.startswith(("x-amzn-sagemaker-", "x-amz-security-token", "x-amz-target"))
        or name == "content-type"
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
    signer = SigV4Auth(creds, match["service"], match["region"])
    canonical = signer.canonical_request(aws)
    expected = signer.signature(signer.string_to_sign(aws, canonical), aws)
    if expected != match["sig"]:
        return "InvalidSignatureException", (
            "The request signature we calculated does not match the signature you provided."
        )
    return None


# ---------------------------------------------------------------------------------------------
# The server


def _head(status: int, headers: dict[str, str]) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"  # 530 (InternalDependencyException) has no standard phrase
    lines = [f"HTTP/1.1 {status} {phrase}"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


_ROUTE = re.compile(r"^/endpoints/(?P<name>[^/]+)/(?P<op>invocations|invocations-response-stream)$")


class SageMakerFake(OpenAIFake):
    """The fake SageMaker Runtime; a context manager running on a background thread.

    Attributes:
        endpoints: the endpoint names that exist.
        stream_flavour: how computed streams are written: ``"sse"`` (TGI) or ``"jsonlines"``
            (LMI).
        generate_shape: computed ``inputs`` answers: ``"tgi"`` (a list) or ``"lmi"`` (an object).
        secrets: access key id -> secret key accepted.
        auth_failures: ``(code, message)`` of every rejected signature.
    """

    def __init__(self, endpoints: list[str] | None = None, region: str = REGION) -> None:
        super().__init__(models=[])
        self.endpoints = list(endpoints) if endpoints is not None else [ENDPOINT]
        self.region = region
        self.secrets = {ACCESS_KEY: SECRET_KEY}
        self.stream_flavour = "sse"
        self.generate_shape = "tgi"
        self.auth_failures: list[tuple[str, str]] = []

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spec(self, endpoint: str = ENDPOINT, **options: str) -> BackendSpec:
        """A :class:`BackendSpec` as ``sagemaker://ENDPOINT?region=...&endpoint_url=...`` parses."""
        opts = {"region": self.region, "endpoint_url": self.endpoint_url, **options}
        opts = {k: v for k, v in opts.items() if v}
        query = "&".join(f"{k}={v}" for k, v in opts.items())
        return BackendSpec(
            kind="sagemaker",
            scheme="sagemaker",
            name=f"sagemaker://{endpoint}?{query}",
            location=endpoint,
            model=options.get("model") or options.get("component") or endpoint,
            options=tuple(sorted((k, v) for k, v in opts.items() if k != "model")),
        )

    @property
    def invocations(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.startswith("/endpoints/")]

    def _answer(self, request: Recorded) -> Answer:
        if request.method != "POST":
            return AwsError(404, "UnknownOperationException", "Unknown operation")
        problem = verify_sigv4(request, self.secrets, self.region)
        if problem is not None:
            self.auth_failures.append(problem)
            return AwsError(403, *problem)
        if request.path == "/":
            return self._describe(request)
        route = _ROUTE.match(request.path)
        if route is None:
            return AwsError(404, "UnknownOperationException", "Unknown operation")
        name, op = route["name"], route["op"]
        if name not in self.endpoints:
            return AwsError(
                400, "ValidationError", f"Endpoint {name} of account {ACCOUNT} not found."
            )
        if len(request.body) > 6 * 1024 * 1024:
            return AwsError(413, "ValidationError", "Request payload is too large")
        scripted = self._queue.popleft() if self._queue else None
        if scripted is not None:
            return scripted
        try:
            body = json.loads(request.body)
        except ValueError:
            return model_error(422, "Failed to deserialize the JSON body into the target type")
        streaming = op == "invocations-response-stream"
        if bool(body.get("stream")) != streaming:
            # TGI decides by the body alone (sagemaker.md 6.1): a mismatch is a client bug.
            return model_error(422, "stream flag does not match the operation")
        text = _echo(body)
        if "inputs" in body:
            if streaming:
                words = [w + " " for w in text.split(" ")]
                words[-1] = words[-1].rstrip()
                sse = self.stream_flavour == "sse"
                return Streamed(token_events(*words, sse=sse))
            details = {"finish_reason": "eos_token", "generated_tokens": 3, "input_length": 7}
            answer = {"generated_text": text, "details": details}
            return Invoked([answer] if self.generate_shape == "tgi" else answer)
        if streaming:
            if self.stream_flavour == "sse":
                return Streamed(sse_chat("Echo", ": ", text[6:]))
            return Streamed(
                jsonlines_chat("Echo", ": ", text[6:]), content_type="application/jsonlines"
            )
        return Invoked(
            {
                "id": "chatcmpl-0",
                "object": "chat.completion",
                "created": CREATED,
                "model": "tgi",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
            }
        )

    def _describe(self, request: Recorded) -> Answer:
        if request.headers.get("x-amz-target") != "SageMaker.DescribeEndpoint":
            return AwsError(400, "UnknownOperationException", "Unknown operation")
        name = json.loads(request.body).get("EndpointName")
        if name not in self.endpoints:
            return AwsError(
                400,
                "ValidationException",
                f'Could not find endpoint "arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/{name}".',
            )
        return Invoked(
            {
                "EndpointName": name,
                "EndpointArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/{name}",
                "EndpointStatus": "InService",
                "CreationTime": float(CREATED),
                "LastModifiedTime": float(CREATED),
            },
            content_type="application/x-amz-json-1.1",
        )

    async def _respond(self, conn: _Conn, request: Recorded) -> bool:
        answer = self._answer(request)
        if isinstance(answer, Close):
            return False
        if isinstance(answer, Stall):
            await self._until_hangup(conn, None)
        base = {"x-amzn-RequestId": REQUEST_ID}
        if isinstance(answer, Streamed):
            frames = [payload_part(p) for p in split_output(answer)]
            if answer.failure is not None:
                frames.append(failure_frame(answer.failure))
            if answer.garbage:
                frames.append(answer.garbage)
            headers = {
                **base,
                "Content-Type": "application/vnd.amazon.eventstream",
                "X-Amzn-SageMaker-Content-Type": answer.content_type,
                "x-Amzn-Invoked-Production-Variant": "AllTraffic",
            }
            stream = Stream(frames, split=answer.wire_split, cut=answer.cut, headers=headers)
            return await self._stream(conn, stream)
        if isinstance(answer, Invoked):
            payload = answer.payload
            raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            head = {**base, "Content-Type": answer.content_type, **answer.headers}
            head["x-Amzn-Invoked-Production-Variant"] = "AllTraffic"
            status = 200
        elif isinstance(answer, AwsError):
            raw = json.dumps({"message": answer.message, **answer.fields}).encode()
            head = {
                **base,
                "Content-Type": "application/json",
                "x-amzn-ErrorType": f"{answer.code}:http://internal.amazon.com/coral/com.amazon.sagemaker/",
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
    "ACCESS_KEY",
    "ENDPOINT",
    "REGION",
    "REQUEST_ID",
    "SECRET_KEY",
    "SESSION_TOKEN",
    "AwsError",
    "Invoked",
    "SageMakerFake",
    "StreamFailure",
    "Streamed",
    "failure_frame",
    "frame",
    "jsonlines_chat",
    "model_error",
    "payload_part",
    "sse_chat",
    "split_output",
    "token_events",
    "verify_sigv4",
]

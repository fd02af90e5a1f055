"""Every backend's loopback fake behind one interface, for ``tests/test_conformance.py``.

An :class:`Adapter` owns a started fake and says, in that backend's own wire format, how to
reach it (``url``, model pinned; ``url_at`` for a port where nothing listens), which
environment it needs (keys), how to script each error kind, a tool-call answer, a mid-stream
error, a malformed frame, a dropped connection, and where the system prompt and the turns of a
request it received ended up. The conformance suite runs the same cases through every adapter::

    with start("ollama") as backend:
        backend.script_error("429")
        client = llmrouter.Client(backend.url)

Backends: ``openai`` (``OpenAIFake(computed=True)``), ``azure`` (the same fake behind
``azure+http://``, checking ``api-key``), ``tgi``, ``ollama``, ``anthropic`` and ``sagemaker``
(the SageMaker fake, real SigV4 checks and event-stream framing, with a container inside that
answers as the OpenAI fake computes: see :class:`ContainerSageMakerFake`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from tests.fakes import (
    anthropic_fake,
    bedrock_fake,
    gemini_fake,
    ollama_fake,
    openai_fake,
    sagemaker_fake,
    tgi_fake,
)
from tests.fakes.adapter_base import Adapter
from tests.fakes.openai_fake import Completion, Error, OpenAIFake, Recorded, Stream

NAMES = [
    "openai",
    "azure",
    "tgi",
    "ollama",
    "anthropic",
    "sagemaker",
    "bedrock",
    "gemini",
    "vertex",
]

# The error kinds every adapter can script, and the status each one stands for.
ERROR_KINDS = ["400", "422", "401", "404", "429", "5xx"]
RETRY_AFTER = 7.0  # the Retry-After every scripted 429 carries, in seconds
GARBAGE = b"{not json"


def _text(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content or ""


# ---------------------------------------------------------------------------------------------
# OpenAI-compatible (vLLM-shaped errors)


class OpenAIAdapter(Adapter):
    name = "openai"
    module = "openai_compat"
    model = "fake-model"

    def url_at(self, port: int) -> str:
        return f"http://127.0.0.1:{port}/v1?model={self.model}"

    @property
    def missing_model_url(self) -> str | None:
        return f"http://127.0.0.1:{self.fake.port}/v1?model=no-such-model"

    def chat_requests(self) -> list[Recorded]:
        return [r for r in self.fake.requests if r.method == "POST"]

    @staticmethod
    def _error(status: int, message: str, type: str, **headers: str) -> Error:
        body = {"error": {"message": message, "type": type, "param": None, "code": status}}
        return Error(status, body, dict(headers))

    def errors(self) -> dict[str, Any]:
        return {
            "400": self._error(400, "temperature must be in [0, 2]", "BadRequestError"),
            "422": self._error(422, "image URL unreachable", "Unprocessable Entity"),
            "401": Error(401, {"error": "Unauthorized"}),  # vLLM's --api-key answer
            "404": self._error(404, "The model `m` does not exist.", "NotFoundError"),
            "429": self._error(
                429, "Rate limit reached", "rate_limit_error", **{"Retry-After": "7"}
            ),
            "5xx": self._error(503, "Queue is full", "QueueOverflowError"),
        }

    def script_tool_call(self, name: str, arguments: dict[str, Any], *, stream: bool) -> None:
        text = json.dumps(arguments)
        call = {"id": "call_abc123", "type": "function"}
        if not stream:
            call["function"] = {"name": name, "arguments": text}
            self.script(Completion(content=None, tool_calls=[call], finish_reason="tool_calls"))
            return
        first = {**call, "index": 0, "function": {"name": name, "arguments": ""}}
        rest = [{"index": 0, "function": {"arguments": p}} for p in (text[:5], text[5:])]
        frames = [
            openai_fake.role_frame(),
            *(openai_fake.frame(openai_fake.chunk({"tool_calls": [d]})) for d in (first, *rest)),
            openai_fake.finish_frame("tool_calls"),
            openai_fake.usage_frame(),
            openai_fake.DONE,
        ]
        self.script(Stream(frames))

    def script_mid_stream_error(self) -> str:
        frames = [
            openai_fake.role_frame(),
            *openai_fake.content_frames("Hel", "lo"),
            openai_fake.error_frame("The server had an error", code=500),
            openai_fake.DONE,
        ]
        self.script(Stream(frames))
        return "Hello"

    def script_malformed(self, *, stream: bool, after_content: bool) -> str:
        if not stream:
            self.script(Error(200, GARBAGE, content_type="application/json"))
            return ""
        content = openai_fake.content_frames("Hel", "lo") if after_content else []
        bad = b"data: " + GARBAGE + b"\n\n"
        self.script(Stream([openai_fake.role_frame(), *content, bad, openai_fake.DONE]))
        return "Hello" if after_content else ""

    def script_cut_after_content(self) -> str:
        frames = [openai_fake.role_frame(), *openai_fake.content_frames("Hel", "lo")]
        self.script(Stream(frames, cut=True))
        return "Hello"


class AzureAdapter(OpenAIAdapter):
    name = "azure"
    module = "azure"
    key = "azure-conformance-key-0123"
    deployment = "mydeployment"
    env: ClassVar[dict[str, str]] = {"AZURE_OPENAI_API_KEY": key}
    wrong_key_env: ClassVar[dict[str, str] | None] = {"AZURE_OPENAI_API_KEY": "wrong-key-0000"}

    def url_at(self, port: int) -> str:
        return f"azure+http://127.0.0.1:{port}/{self.deployment}?model=gpt-4o"

    @property
    def missing_model_url(self) -> str | None:
        return f"azure+http://127.0.0.1:{self.fake.port}/no-such-deployment?model=gpt-4o"

    def errors(self) -> dict[str, Any]:
        denied = "Access denied due to invalid subscription key or wrong API endpoint."
        missing = "The API deployment for this resource does not exist."
        limited = "Requests have exceeded the rate limit"
        return {
            **super().errors(),
            "401": Error(401, {"error": {"code": "401", "message": denied}}),
            "404": Error(404, {"error": {"code": "DeploymentNotFound", "message": missing}}),
            "429": Error(429, {"error": {"code": "429", "message": limited}}, {"Retry-After": "7"}),
        }


# ---------------------------------------------------------------------------------------------
# TGI


class TGIAdapter(Adapter):
    name = "tgi"
    module = "tgi"

    def url_at(self, port: int) -> str:
        return f"tgi://127.0.0.1:{port}?model={tgi_fake.MODEL_ID}"

    def chat_requests(self) -> list[Recorded]:
        return [r for r in self.fake.requests if r.path == "/v1/chat/completions"]

    def errors(self) -> dict[str, Any]:
        return {
            "400": tgi_fake.rejection(400, "Failed to parse the request body as JSON"),
            "422": tgi_fake.validation_error("`top_p` must be > 0.0 and < 1.0"),
            # TGI has no auth of its own: a gateway in front of it (HF endpoints) says 401.
            "401": Error(401, {"error": "Authorization header is invalid"}),
            "404": Error(404, {"error": "Model not found", "error_type": "not_found"}),
            "429": tgi_fake.overloaded(**{"Retry-After": "7"}),
            "5xx": tgi_fake.tgi_error(
                500, "Request failed during generation: shard died", "incomplete_generation"
            ),
        }

    def script_tool_call(self, name: str, arguments: dict[str, Any], *, stream: bool) -> None:
        text = json.dumps(arguments)
        usage = {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14}
        if not stream:
            call = {
                "id": "0",
                "type": "function",
                "function": {"description": None, "name": name, "arguments": text},
            }
            message = {"role": "assistant", "tool_calls": [call]}
            completion = tgi_fake.TGIFake._completion(message, "stop", tgi_fake.MODEL_ID, usage)
            self.script(Error(200, completion))
            return
        frames = [tgi_fake.KEEP_ALIVE]
        parts = ["{", text[1:-1], "}"]
        for i, part in enumerate(parts):
            call = {
                "index": 0,
                "id": "",
                "type": "function",
                "function": {"name": name if i == 0 else None, "arguments": part},
            }
            finish = "stop" if i == len(parts) - 1 else None
            frames.append(tgi_fake.event(tgi_fake.tgi_chunk({"tool_calls": [call]}, finish)))
        self.script(Stream([*frames, tgi_fake.DONE]))

    @staticmethod
    def _content(*texts: str) -> list[bytes]:
        return [tgi_fake.event(tgi_fake.tgi_chunk({"content": t})) for t in texts]

    def script_mid_stream_error(self) -> str:
        error = tgi_fake.error_event("Request failed during generation: CUDA out of memory")
        self.script(
            Stream([tgi_fake.KEEP_ALIVE, *self._content("Hel", "lo"), error, tgi_fake.DONE])
        )
        return "Hello"

    def script_malformed(self, *, stream: bool, after_content: bool) -> str:
        if not stream:
            self.script(Error(200, GARBAGE, content_type="application/json"))
            return ""
        content = self._content("Hel", "lo") if after_content else []
        bad = b"data:" + GARBAGE + b"\n\n"
        self.script(Stream([tgi_fake.KEEP_ALIVE, *content, bad, tgi_fake.DONE]))
        return "Hello" if after_content else ""

    def script_cut_after_content(self) -> str:
        self.script(Stream([tgi_fake.KEEP_ALIVE, *self._content("Hel", "lo")], cut=True))
        return "Hello"


# ---------------------------------------------------------------------------------------------
# Ollama (native /api/chat)


class OllamaAdapter(Adapter):
    name = "ollama"
    module = "ollama"
    model = "llama3.2"

    def url_at(self, port: int) -> str:
        return f"ollama://127.0.0.1:{port}?model={self.model}"

    @property
    def missing_model_url(self) -> str | None:
        return f"ollama://127.0.0.1:{self.fake.port}?model=no-such-model"

    def errors(self) -> dict[str, Any]:
        reply = ollama_fake.Reply
        return {
            "400": reply(400, 'invalid think value: "extreme"'),
            "422": reply(422, "unprocessable request"),  # from a proxy: Ollama has no 422
            "401": reply(401, "unauthorized"),  # from a proxy: Ollama has no auth
            "404": reply(404, "model 'm' not found"),
            "429": reply(429, "server busy, please try again", {"Retry-After": "7"}),
            "5xx": reply(500, "llama runner process has terminated: exit status 2"),
        }

    def script_tool_call(self, name: str, arguments: dict[str, Any], *, stream: bool) -> None:
        call = {"function": {"name": name, "arguments": arguments}}
        self.script(ollama_fake.Answer(text="", tool_calls=[call]))

    def _partial(self, count: int) -> str:
        # The fake streams its echo of the last message, one token per line.
        return "".join(ollama_fake.tokens("Echo: " + LAST_USER_TEXT)[:count])

    def script_mid_stream_error(self) -> str:
        self.script(ollama_fake.MidStreamError("model runner has unexpectedly stopped", after=2))
        return self._partial(2)

    def script_malformed(self, *, stream: bool, after_content: bool) -> str:
        after = 2 if stream and after_content else 0
        self.script(ollama_fake.Garbage(GARBAGE + b"\n", after=after))
        return self._partial(after)

    def script_close(self) -> None:
        self.script(ollama_fake.Cut(after=0))

    def script_cut_after_content(self) -> str:
        self.script(ollama_fake.Cut(after=2))
        return self._partial(2)


# ---------------------------------------------------------------------------------------------
# Anthropic Messages API


class AnthropicAdapter(Adapter):
    name = "anthropic"
    module = "anthropic"
    env: ClassVar[dict[str, str]] = {"ANTHROPIC_API_KEY": anthropic_fake.API_KEY}
    wrong_key_env: ClassVar[dict[str, str] | None] = {"ANTHROPIC_API_KEY": "sk-ant-wrong-000"}

    def url_at(self, port: int) -> str:
        return f"anthropic+http://127.0.0.1:{port}?model={anthropic_fake.MODEL}"

    @property
    def missing_model_url(self) -> str | None:
        return f"anthropic+http://127.0.0.1:{self.fake.port}?model=claude-no-such-model"

    def chat_requests(self) -> list[Recorded]:
        return list(self.fake.message_requests)

    def system_of(self, body: dict[str, Any]) -> str | None:
        system = body.get("system")
        return system if isinstance(system, str | None) else _text(system)

    def turns_of(self, body: dict[str, Any]) -> list[tuple[str, str]]:
        return [
            (m["role"], " ".join(anthropic_fake._texts(m["content"]))) for m in body["messages"]
        ]

    def errors(self) -> dict[str, Any]:
        api_error = anthropic_fake.api_error
        return {
            "400": api_error(400, "invalid_request_error", "temperature: out of range"),
            "422": api_error(422, "invalid_request_error", "unprocessable"),  # not Anthropic's
            "401": api_error(401, "authentication_error", "invalid x-api-key"),
            "404": api_error(404, "not_found_error", "model: claude-x"),
            "429": api_error(
                429, "rate_limit_error", "Number of requests exceeded", {"retry-after": "7"}
            ),
            "5xx": api_error(529, "overloaded_error", "Overloaded"),
        }

    def script_tool_call(self, name: str, arguments: dict[str, Any], *, stream: bool) -> None:
        block = anthropic_fake.tool_use_block(name, arguments, id="toolu_01A")
        self.script(anthropic_fake.Reply(content=[block], stop_reason="tool_use"))

    def script_mid_stream_error(self) -> str:
        text = anthropic_fake.text_block("Hello there")
        error = ("overloaded_error", "Overloaded")
        self.script(anthropic_fake.Reply(content=[text], error=error))
        return "Hello there"

    @staticmethod
    def _events() -> list[bytes]:
        """message_start, content_block_start, ping, two text deltas (of "Hello there")."""
        reply = anthropic_fake.Reply(content=[anthropic_fake.text_block("Hello there")])
        return anthropic_fake.message_events(reply, anthropic_fake.MODEL)[:5]

    def script_malformed(self, *, stream: bool, after_content: bool) -> str:
        if not stream:
            self.script(Error(200, GARBAGE, content_type="application/json"))
            return ""
        events = self._events() if after_content else self._events()[:1]
        bad = b"event: content_block_delta\ndata: " + GARBAGE + b"\n\n"
        self.script(Stream([*events, bad]))
        return "Hello there" if after_content else ""

    def script_cut_after_content(self) -> str:
        self.script(Stream(self._events(), cut=True))
        return "Hello there"


# ---------------------------------------------------------------------------------------------
# SageMaker (messages dialect: the OpenAI chat body inside InvokeEndpoint)


class ContainerSageMakerFake(sagemaker_fake.SageMakerFake):
    """The SageMaker fake with a container that answers like a server.

    The SageMaker fake checks SigV4, routes endpoints, frames event streams and answers its own
    ``Echo:`` without reading ``max_tokens``, ``stop``, tools or response formats. Here the
    container behind the endpoint (TGI's or LMI's OpenAI-compatible chat route) validates and
    answers as ``OpenAIFake(computed=True)`` does; a body it rejects is the container's 422,
    which SageMaker reports as a 424 ``ModelError``. Scripted answers still come first.
    """

    def _answer(self, request: Recorded) -> Any:
        scripted = bool(self._queue)
        answer = super()._answer(request)
        if scripted or not isinstance(answer, sagemaker_fake.Invoked | sagemaker_fake.Streamed):
            return answer
        body = json.loads(request.body)
        if "messages" not in body:
            return answer
        body = {"model": "tgi", **body}
        problem = openai_fake.validate_chat(body)
        if problem:
            return sagemaker_fake.model_error(422, problem)
        computed = openai_fake.computed_answer(body)
        if isinstance(computed, Completion):
            return sagemaker_fake.Invoked(computed.payload())
        assert isinstance(computed, Stream)
        return sagemaker_fake.Streamed(b"".join(computed.frames))


def _bad_crc(frame: bytes) -> bytes:
    return frame[:-1] + bytes([frame[-1] ^ 0xFF])


class SageMakerAdapter(Adapter):
    name = "sagemaker"
    module = "sagemaker"
    env: ClassVar[dict[str, str]] = {
        "AWS_ACCESS_KEY_ID": sagemaker_fake.ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": sagemaker_fake.SECRET_KEY,
        "AWS_EC2_METADATA_DISABLED": "true",  # botocore never looks for an instance role
        "AWS_CONFIG_FILE": "/nonexistent/llmrouter-conformance/config",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/llmrouter-conformance/credentials",
    }
    unset_env = (
        "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
        "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SAGEMAKER",
        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN",
    )  # fmt: skip
    wrong_key_env: ClassVar[dict[str, str] | None] = {"AWS_SECRET_ACCESS_KEY": "wrong/secret/00"}

    def reset(self) -> None:
        from llmrouter.backends import sagemaker

        sagemaker.reset_credentials()

    def url_at(self, port: int, endpoint: str = sagemaker_fake.ENDPOINT) -> str:
        region = sagemaker_fake.REGION
        return f"sagemaker://{endpoint}?region={region}&endpoint_url=http://127.0.0.1:{port}"

    @property
    def missing_model_url(self) -> str | None:
        return self.url_at(self.fake.port, "no-such-endpoint")

    def chat_requests(self) -> list[Recorded]:
        return list(self.fake.invocations)

    def errors(self) -> dict[str, Any]:
        aws = sagemaker_fake.AwsError
        endpoint = sagemaker_fake.ENDPOINT
        return {
            "400": aws(400, "ValidationError", "1 validation error detected: Value at 'body'"),
            "422": sagemaker_fake.model_error(422, "Input validation error: `top_p` must be < 1"),
            "401": aws(403, "UnrecognizedClientException", "The security token is invalid."),
            "404": aws(400, "ValidationError", f"Endpoint {endpoint} of account 1 not found."),
            "429": aws(429, "ModelNotReadyException", "Model is loading", {}, {"Retry-After": "7"}),
            "5xx": aws(503, "ServiceUnavailable", "The service is unavailable."),
        }

    def script_error(self, kind: str) -> int:
        status = super().script_error(kind)
        # AWS answers 403 to a bad signature and 400 ValidationError to an unknown endpoint.
        return {401: 403, 404: 400}.get(status, status)

    def script_tool_call(self, name: str, arguments: dict[str, Any], *, stream: bool) -> None:
        OpenAIAdapter.script_tool_call(self, name, arguments, stream=stream)  # type: ignore[arg-type]

    def script(self, *answers: Any) -> None:
        # OpenAI-shaped answers are what the container sends: wrap them in SageMaker's envelope.
        for answer in answers:
            if isinstance(answer, Completion):
                answer = sagemaker_fake.Invoked(answer.payload())
            elif isinstance(answer, Stream):
                answer = sagemaker_fake.Streamed(b"".join(answer.frames), cut=answer.cut)
            self.fake.script(answer)

    def script_mid_stream_error(self) -> str:
        output = sagemaker_fake.sse_chat("Hel", "lo", finish=None, done=False)
        self.fake.script(sagemaker_fake.Streamed(output, failure=sagemaker_fake.StreamFailure()))
        return "Hello"

    def script_malformed(self, *, stream: bool, after_content: bool) -> str:
        if not stream:
            self.fake.script(sagemaker_fake.Invoked(GARBAGE))
            return ""
        output = sagemaker_fake.sse_chat("Hel", "lo", finish=None, done=False)
        garbage = _bad_crc(sagemaker_fake.payload_part(b"data:{}\n\n"))
        self.fake.script(sagemaker_fake.Streamed(output if after_content else b"", garbage=garbage))
        return "Hello" if after_content else ""

    def script_cut_after_content(self) -> str:
        output = sagemaker_fake.sse_chat("Hel", "lo", finish=None, done=False)
        self.fake.script(sagemaker_fake.Streamed(output, cut=True))
        return "Hello"


# ---------------------------------------------------------------------------------------------
# Bedrock (Converse / ConverseStream: SigV4 checked by botocore, event-stream framing)


class BedrockAdapter(Adapter):
    """``bedrock://`` against :class:`tests.fakes.bedrock_fake.BedrockFake` (self-contained)."""

    name = "bedrock"
    module = "bedrock"
    env: ClassVar[dict[str, str]] = {
        "AWS_ACCESS_KEY_ID": bedrock_fake.ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": bedrock_fake.SECRET_KEY,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": "/nonexistent/llmrouter-conformance/config",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/llmrouter-conformance/credentials",
    }
    unset_env = (
        "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
        "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_BEDROCK",
        "AWS_ENDPOINT_URL_BEDROCK_RUNTIME", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN",
    )  # fmt: skip
    wrong_key_env: ClassVar[dict[str, str] | None] = {"AWS_SECRET_ACCESS_KEY": "wrong/secret/00"}

    def reset(self) -> None:
        from llmrouter.backends import bedrock

        bedrock.reset_credentials()

    def url_at(self, port: int, model: str = bedrock_fake.MODEL) -> str:
        region = bedrock_fake.REGION
        return f"bedrock://{model}?region={region}&endpoint=http://127.0.0.1:{port}"

    @property
    def missing_model_url(self) -> str | None:
        return self.url_at(self.fake.port, "no.such-model-v1:0")

    def chat_requests(self) -> list[Recorded]:
        return list(self.fake.converse_requests)

    def system_of(self, body: dict[str, Any]) -> str | None:
        system = body.get("system")
        return " ".join(b["text"] for b in system) if system else None

    def turns_of(self, body: dict[str, Any]) -> list[tuple[str, str]]:
        turns = []
        for message in body["messages"]:
            texts = []
            for block in message["content"]:
                if "text" in block:
                    texts.append(block["text"])
                elif "toolResult" in block:
                    texts += [c["text"] for c in block["toolResult"]["content"] if "text" in c]
            turns.append((message["role"], " ".join(texts)))
        return turns

    def errors(self) -> dict[str, Any]:
        aws = bedrock_fake.AwsError
        return {
            "400": aws(400, "ValidationException", "Malformed input request: temperature"),
            "422": aws(422, "ValidationException", "unprocessable"),  # from a proxy: not Bedrock's
            "401": aws(403, "UnrecognizedClientException", "The security token is invalid."),
            "404": aws(404, "ResourceNotFoundException", "Model not found for this account."),
            "429": aws(429, "ThrottlingException", "Too many requests", {}, {"Retry-After": "7"}),
            "5xx": aws(503, "ServiceUnavailableException", "Service unavailable, retry later."),
        }

    def script_error(self, kind: str) -> int:
        status = super().script_error(kind)
        return {401: 403}.get(status, status)  # AWS answers 403 to a bad signature

    def script_tool_call(self, name: str, arguments: dict[str, Any], *, stream: bool) -> None:
        use = {"toolUseId": "tooluse_abc123", "name": name, "input": arguments}
        self.script(bedrock_fake.Reply(content=[{"toolUse": use}], stop_reason="tool_use"))

    def script_mid_stream_error(self) -> str:
        failure = ("modelStreamErrorException", "The model stream broke")
        self.script(bedrock_fake.text_reply("Hel", "lo", failure=failure))
        return "Hello"

    def script_malformed(self, *, stream: bool, after_content: bool) -> str:
        if not stream:
            self.script(Error(200, GARBAGE, content_type="application/json"))
            return ""
        bad = _bad_crc(bedrock_fake.event("contentBlockDelta", {"contentBlockIndex": 0}))
        if not after_content:
            self.script(bedrock_fake.Reply(content=[], garbage=bad))
            return ""
        self.script(bedrock_fake.text_reply("Hel", "lo", garbage=bad))
        return "Hello"

    def script_cut_after_content(self) -> str:
        self.script(bedrock_fake.text_reply("Hel", "lo", cut=True))
        return "Hello"


# ---------------------------------------------------------------------------------------------
# Gemini API and Vertex AI (generateContent / streamGenerateContent?alt=sse)


class GeminiAdapter(Adapter):
    """``gemini://`` against :class:`tests.fakes.gemini_fake.GeminiFake` (self-contained).

    No ``wrong_key_env``: the Gemini API answers a wrong key with 400 ``INVALID_ARGUMENT``
    (reason ``API_KEY_INVALID``), mapped to AuthenticationError with its real status 400, which
    the suite's 401/403 check does not cover (``tests/_async/test_gemini.py`` does)."""

    name = "gemini"
    module = "gemini"
    env: ClassVar[dict[str, str]] = {"GEMINI_API_KEY": gemini_fake.API_KEY}
    unset_env = ("GOOGLE_API_KEY",)

    def url_at(self, port: int) -> str:
        return f"gemini+http://127.0.0.1:{port}?model={gemini_fake.MODEL}"

    @property
    def missing_model_url(self) -> str | None:
        return self.url_at(self.fake.port).replace(gemini_fake.MODEL, "gemini-no-such-model")

    def chat_requests(self) -> list[Recorded]:
        return list(self.fake.generate_requests)

    def system_of(self, body: dict[str, Any]) -> str | None:
        system = body.get("systemInstruction")
        return " ".join(p["text"] for p in system["parts"]) if system else None

    def turns_of(self, body: dict[str, Any]) -> list[tuple[str, str]]:
        turns = []
        for content in body["contents"]:
            texts = []
            for part in content["parts"]:
                if "text" in part:
                    texts.append(part["text"])
                elif "functionResponse" in part:
                    texts.append(str(part["functionResponse"]["response"].get("result", "")))
            role = "assistant" if content["role"] == "model" else "user"
            turns.append((role, " ".join(texts)))
        return turns

    def errors(self) -> dict[str, Any]:
        error = gemini_fake.GoogleError
        return {
            "400": error(400, "INVALID_ARGUMENT", "temperature must be in [0, 2]"),
            "422": error(422, "INVALID_ARGUMENT", "unprocessable"),  # from a proxy: not Google's
            "401": error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials."),
            "404": error(404, "NOT_FOUND", "models/m is not found for API version v1beta"),
            "429": error(429, "RESOURCE_EXHAUSTED", "Quota exceeded", retry_delay="7s"),
            "5xx": error(503, "UNAVAILABLE", "The model is overloaded. Please try again later."),
        }

    def script_tool_call(self, name: str, arguments: dict[str, Any], *, stream: bool) -> None:
        self.script(gemini_fake.Reply(parts=[{"functionCall": {"name": name, "args": arguments}}]))

    def script_mid_stream_error(self) -> str:
        error = gemini_fake.GoogleError(500, "INTERNAL", "An internal error has occurred.")
        self.script(gemini_fake.text_reply("Hel", "lo", error=error.body()))
        return "Hello"

    def script_malformed(self, *, stream: bool, after_content: bool) -> str:
        if not stream:
            self.script(Error(200, GARBAGE, content_type="application/json"))
            return ""
        bad = b"data: " + GARBAGE + b"\r\n\r\n"
        if not after_content:
            self.script(gemini_fake.Reply(parts=[], garbage=bad))
            return ""
        self.script(gemini_fake.text_reply("Hel", "lo", garbage=bad))
        return "Hello"

    def script_cut_after_content(self) -> str:
        self.script(gemini_fake.text_reply("Hel", "lo", cut=True))
        return "Hello"


class VertexAdapter(GeminiAdapter):
    """``vertex://PROJECT/LOCATION`` against the same fake's Vertex AI routes; the token comes
    from ``?token_env=`` (google-auth's ADC path is tested in ``tests/_async/test_gemini.py``)."""

    name = "vertex"
    module = "gemini"
    env: ClassVar[dict[str, str]] = {"LLMROUTER_TEST_VERTEX_TOKEN": gemini_fake.TOKEN}
    unset_env = ()
    wrong_key_env: ClassVar[dict[str, str] | None] = {"LLMROUTER_TEST_VERTEX_TOKEN": "ya29.wrong"}

    def url_at(self, port: int) -> str:
        return (
            f"vertex://{gemini_fake.PROJECT}/{gemini_fake.LOCATION}?model={gemini_fake.MODEL}"
            f"&endpoint=http://127.0.0.1:{port}&token_env=LLMROUTER_TEST_VERTEX_TOKEN"
        )


# ---------------------------------------------------------------------------------------------

# The last user message of the suite's prompts (the Ollama fake echoes it).
LAST_USER_TEXT = "Say hello to the conformance suite"

_ADAPTERS: dict[str, type[Adapter]] = {
    cls.name: cls
    for cls in (
        OpenAIAdapter,
        AzureAdapter,
        TGIAdapter,
        OllamaAdapter,
        AnthropicAdapter,
        SageMakerAdapter,
        BedrockAdapter,
        GeminiAdapter,
        VertexAdapter,
    )
}


def _fake(name: str) -> Any:
    if name == "openai":
        return OpenAIFake(models=[OpenAIAdapter.model], computed=True)
    if name == "azure":
        return OpenAIFake(models=[AzureAdapter.deployment], computed=True, api_key=AzureAdapter.key)
    if name == "tgi":
        return tgi_fake.TGIFake()
    if name == "ollama":
        return ollama_fake.OllamaFake()
    if name == "anthropic":
        return anthropic_fake.AnthropicFake()
    if name == "sagemaker":
        return ContainerSageMakerFake()
    if name == "bedrock":
        return bedrock_fake.BedrockFake()
    if name in ("gemini", "vertex"):
        return gemini_fake.GeminiFake()
    raise KeyError(name)


@contextmanager
def start(name: str) -> Iterator[Adapter]:
    """Start backend ``name``'s fake; the adapter is valid inside the block."""
    with _fake(name) as fake:
        yield _ADAPTERS[name](fake)

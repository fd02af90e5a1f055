"""The conformance suite, as a kit: every case the built-in backends pass, for any backend.

A backend under test is an :class:`Adapter`: it owns a started server (a loopback fake built on
:class:`llmrouter.testing.LoopbackServer`, or a real server) and says, in that backend's own
wire format, how to reach it, which environment it needs, how to script each error kind, a
tool-call answer, a mid-stream error, a malformed frame and a dropped connection, and where the
system prompt and the turns of a request it received ended up. The cases then check what the
README promises: whichever protocol serves it, the caller sees the OpenAI shape and the same
typed errors, sync and async, streamed and not. Where the backend's declared
:class:`~llmrouter.backends.Capabilities` lack what a case needs, the case asserts the refusal
instead (``InvalidRequestError`` before anything is sent).

A plugin author runs them with a subclass named ``Test...`` in a test module::

    from llmrouter.testing.conformance import ConformanceSuite
    from my_tests.adapter import start_my_backend   # () -> context manager of an Adapter

    class TestMyBackend(ConformanceSuite):
        adapters = {"mine": start_my_backend}

Each case runs once per adapter and client (``sync``/``async``). The cases are ``async def``:
the kit needs ``pytest-asyncio`` with ``asyncio_mode = "auto"`` (or mark the subclass
``@pytest.mark.asyncio``). llmrouter's own built-ins run through this same class
(``tests/test_conformance.py``). See ``docs/plugins.md``.
"""

from __future__ import annotations

import abc
import json
import socket
import ssl
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol
from urllib.parse import urlsplit

import httpx2
import pydantic
import pytest

import llmrouter
from llmrouter._http import SyncHTTPTransport
from llmrouter.backends import Capabilities, registry
from llmrouter.policy import RetryPolicy

__all__ = [
    "CAPABILITY_REQUESTS",
    "ERROR_KINDS",
    "GARBAGE",
    "LAST_USER_TEXT",
    "RETRY_AFTER",
    "STATUS_ERRORS",
    "Adapter",
    "AdapterFactory",
    "Answer",
    "ConformanceSuite",
    "ReceivedRequest",
    "chat",
    "free_port",
    "text_of",
]

# The error kinds every adapter can script (Adapter.script_error), and the error each must map to.
ERROR_KINDS = ["400", "422", "401", "404", "429", "5xx"]
RETRY_AFTER = 7.0  # the Retry-After every scripted 429 carries, in seconds
GARBAGE = b"{not json"  # a body or frame that is not JSON
# The last user message of the suite's prompts (a fake that echoes answers with it).
LAST_USER_TEXT = "Say hello to the conformance suite"


def free_port() -> int:
    """A port of 127.0.0.1 where nothing listens (for "connection refused")."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def text_of(content: Any) -> str:
    """The text of a message's content: a string, or the text parts of a list joined by spaces."""
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content or "")


class ReceivedRequest(Protocol):
    """A request the server under test received: its body as JSON."""

    @property
    def json(self) -> Any: ...


class Adapter(abc.ABC):
    """One backend's server, seen through the conformance suite's eyes.

    Override what your protocol does differently; the defaults fit an OpenAI-shaped chat body
    (``messages`` with ``role``/``content``).

    Attributes:
        name: the adapter's name (the test id).
        env: environment set for the whole test (keys).
        unset_env: environment removed for the whole test.
        wrong_key_env: environment that makes the server answer 401/403 (``None``: the backend
            takes no key, and the wrong-key case is skipped).
        fake: the started server the adapter drives.
    """

    name: ClassVar[str]
    env: ClassVar[dict[str, str]] = {}
    unset_env: ClassVar[tuple[str, ...]] = ()
    wrong_key_env: ClassVar[dict[str, str] | None] = None

    def __init__(self, fake: Any) -> None:
        self.fake = fake

    def reset(self) -> None:  # noqa: B027 - a hook most backends do not need
        """Forget process-wide state (cached credentials) after the environment changed."""

    @property
    def capabilities(self) -> Capabilities:
        """The capabilities the backend declares: those of its URL's scheme, by default."""
        scheme = urlsplit(self.url).scheme.lower()
        for transport in ("+https", "+http"):
            scheme = scheme.removesuffix(transport)
        return registry.declaration(scheme).capabilities

    @property
    def url(self) -> str:
        """The backend URL, model pinned."""
        return self.url_at(self.fake.port)

    @abc.abstractmethod
    def url_at(self, port: int) -> str:
        """The same backend URL on another port of 127.0.0.1."""

    @property
    def missing_model_url(self) -> str | None:
        """A URL pinned to a model the server does not serve (``None``: script a 404)."""
        return None

    def chat_requests(self) -> Sequence[ReceivedRequest]:
        """The chat requests that reached the server, in order (``fake.chat_requests``)."""
        return list(self.fake.chat_requests)

    # -- what the server received ------------------------------------------------------------

    def system_of(self, body: dict[str, Any]) -> str | None:
        """The system prompt of a chat body the server received."""
        system = [m for m in body["messages"] if m["role"] == "system"]
        return text_of(system[0]["content"]) if system else None

    def turns_of(self, body: dict[str, Any]) -> list[tuple[str, str]]:
        """``(role, text)`` of the non-system messages of a chat body the server received."""
        return [
            (m["role"], text_of(m.get("content")))
            for m in body["messages"]
            if m["role"] != "system"
        ]

    # -- scripting ---------------------------------------------------------------------------

    def script(self, *answers: Any) -> None:
        """Queue answers for the next requests (``fake.script``)."""
        self.fake.script(*answers)

    def script_error(self, kind: str) -> int:
        """The next chat request gets this error kind (:data:`ERROR_KINDS`), before any
        stream starts, in the backend's own error shape; returns the status the caller should
        see (the kind's own, except where the protocol says it otherwise; 0 for ``5xx``)."""
        answer = self.errors()[kind]
        self.script(answer)
        return 0 if kind == "5xx" else int(kind)

    @abc.abstractmethod
    def errors(self) -> dict[str, Any]:
        """Error kind -> the scripted answer (429s carry ``Retry-After: 7``)."""

    @abc.abstractmethod
    def script_tool_call(self, name: str, arguments: dict[str, Any], *, stream: bool) -> None:
        """The next chat request gets one call of tool ``name`` with ``arguments``."""

    @abc.abstractmethod
    def script_mid_stream_error(self) -> str:
        """The next stream sends some content, then the protocol's error event; returns the
        content sent before the error."""

    @abc.abstractmethod
    def script_malformed(self, *, stream: bool, after_content: bool) -> str:
        """The next answer is malformed: a 200 body that is not JSON, or a stream whose frame
        is not JSON (after some content or not). Returns the content sent before it."""

    @abc.abstractmethod
    def script_close(self) -> None:
        """The next chat request is read and the connection closed without an answer (for a
        stream, at most the response head is sent)."""

    @abc.abstractmethod
    def script_cut_after_content(self) -> str:
        """The next stream sends some content, then the connection drops; returns the
        content sent."""


AdapterFactory = Callable[[], AbstractContextManager[Adapter]]
"""Starts a backend's server and gives its adapter, valid inside the ``with`` block."""


OPTIONS: dict[str, Any] = {"retry_policy": RetryPolicy.testing(max_retries=0)}
HI = [{"role": "user", "content": LAST_USER_TEXT}]
SYSTEM = "You are terse. Answer in five words or fewer."
MULTI_TURN = [
    {"role": "user", "content": "My name is Ada."},
    {"role": "assistant", "content": "Nice to meet you, Ada."},
    {"role": "user", "content": LAST_USER_TEXT},
]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
CITY_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "country": {"type": "string"}},
    "required": ["name", "country"],
    "additionalProperties": False,
}
JSON_SCHEMA = {
    "type": "json_schema",
    "json_schema": {"name": "city", "schema": CITY_SCHEMA, "strict": True},
}


class City(pydantic.BaseModel):
    name: str
    country: str


STATUS_ERRORS: dict[str, type[llmrouter.StatusError]] = {
    "400": llmrouter.BadRequestError,
    "422": llmrouter.BadRequestError,
    "401": llmrouter.AuthenticationError,
    "404": llmrouter.NotFoundError,
    "429": llmrouter.RateLimitError,
    "5xx": llmrouter.ServerError,
}

# What a request needs in order to use each capability (llmrouter.backends.Capabilities).
CAPABILITY_REQUESTS: dict[str, dict[str, Any]] = {
    "tools": {"tools": [WEATHER]},
    "tool_choice": {
        "tools": [WEATHER],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    },
    "json_object": {"response_format": {"type": "json_object"}},
    "json_schema": {"response_format": JSON_SCHEMA},
    "stream_usage": {"stream": True, "stream_options": {"include_usage": True}},
    "seed": {"seed": 7},
    "n": {"n": 2},
    "logprobs": {"logprobs": True, "top_logprobs": 2},
    "stop": {"stop": ["conformance"]},
}


# Each sync Client builds its own httpx2 client and, with it, an SSL context that loads the CA
# bundle (about 25 ms), although every fake here speaks plain HTTP: one shared context halves
# the suite's time. Everything else is the default path (SyncHTTPTransport, httpx2, sockets).
_SSL_CONTEXT = ssl.create_default_context()


def sync_client(url: str) -> llmrouter.Client:
    transport = SyncHTTPTransport(transport=httpx2.HTTPTransport(verify=_SSL_CONTEXT))
    return llmrouter.Client(url, transport=transport, **OPTIONS)


@dataclass
class Answer:
    """A completion or a whole stream, seen the same way."""

    content: str | None = None
    role: str | None = None
    finish_reason: str | None = None
    usage: Any = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    chunks: list[Any] = field(default_factory=list)  # streams only
    response: Any = None  # the ChatCompletion (or the stream)


def _from_completion(resp: Any) -> Answer:
    message = resp.choices[0].message
    calls = [
        {"id": c.id, "type": c.type, "name": c.function.name, "arguments": c.function.arguments}
        for c in message.tool_calls or []
    ]
    return Answer(
        content=message.content,
        role=message.role,
        finish_reason=resp.choices[0].finish_reason,
        usage=resp.usage,
        tool_calls=calls,
        response=resp,
    )


def _add_chunk(answer: Answer, chunk: Any) -> None:
    answer.chunks.append(chunk)
    if chunk.usage is not None:
        answer.usage = chunk.usage
    for choice in chunk.choices:
        delta = choice.delta
        answer.role = answer.role or delta.role
        if delta.content:
            answer.content = (answer.content or "") + delta.content
        for piece in delta.tool_calls or []:
            while len(answer.tool_calls) <= piece.index:
                answer.tool_calls.append({"id": None, "type": None, "name": None, "arguments": ""})
            call = answer.tool_calls[piece.index]
            call["id"] = call["id"] or piece.id
            call["type"] = call["type"] or piece.type
            if piece.function is not None:
                call["name"] = call["name"] or piece.function.name
                call["arguments"] += piece.function.arguments or ""
        if choice.finish_reason is not None:
            answer.finish_reason = choice.finish_reason


async def chat(
    mode: str, url: str, *, stream: bool = False, into: Answer | None = None, **kw: Any
) -> Answer:
    """One chat through ``Client`` or ``AsyncClient``; a stream is read to its end. Chunks go to
    ``into`` as they arrive (so they are kept when the stream raises)."""
    kw.setdefault("messages", HI)
    answer = Answer() if into is None else into
    if mode == "sync":
        with sync_client(url) as client:
            if not stream:
                return _from_completion(client.chat.completions.create(**kw))
            with client.chat.completions.create(stream=True, **kw) as s:
                answer.response = s
                for chunk in s:
                    _add_chunk(answer, chunk)
        return answer
    async with llmrouter.AsyncClient(url, **OPTIONS) as aclient:
        if not stream:
            return _from_completion(await aclient.chat.completions.create(**kw))
        async with await aclient.chat.completions.create(stream=True, **kw) as s:
            answer.response = s
            async for chunk in s:
                _add_chunk(answer, chunk)
    return answer


async def parse(mode: str, url: str, **kw: Any) -> Any:
    kw.setdefault("messages", HI)
    if mode == "sync":
        with sync_client(url) as client:
            return client.chat.completions.parse(**kw)
    async with llmrouter.AsyncClient(url, **OPTIONS) as aclient:
        return await aclient.chat.completions.parse(**kw)


def assert_usage(usage: Any) -> None:
    assert usage is not None
    assert usage.prompt_tokens > 0
    assert usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def assert_one_finish(answer: Answer) -> None:
    finishing = [c for c in answer.chunks for ch in c.choices if ch.finish_reason is not None]
    assert len(finishing) == 1, [c.model_dump() for c in finishing]


async def assert_refused(mode: str, backend: Adapter, **kw: Any) -> None:
    """The request is refused before sending: ``InvalidRequestError``, nothing received."""
    stream = bool(kw.pop("stream", False))
    before = len(backend.chat_requests())
    with pytest.raises(llmrouter.InvalidRequestError):
        await chat(mode, backend.url, stream=stream, **kw)
    assert len(backend.chat_requests()) == before


# How the caller sends the assistant's tool call back: built by hand (content None, as the
# OpenAI SDK does), with content "" (as some frameworks do), or the returned message dumped.
FOLLOW_UPS = ["none", "empty", "dumped"]
STREAMED = pytest.mark.parametrize("streamed", [False, True], ids=["plain", "stream"])


class ConformanceSuite:
    """The cases, as a test class: subclass it as ``Test...`` and set :attr:`adapters`.

    Attributes:
        adapters: name -> :data:`AdapterFactory`, the backends the cases run against.
        keyed_adapters: the names whose adapters set ``wrong_key_env`` (the wrong-key case runs
            for these); ``None``: every adapter, skipping those without one.
    """

    adapters: ClassVar[Mapping[str, AdapterFactory]] = {}
    keyed_adapters: ClassVar[Sequence[str] | None] = None

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        """Parametrize ``backend`` (and ``keyed_adapter``) over :attr:`adapters`."""
        if "backend" in metafunc.fixturenames:
            metafunc.parametrize("backend", list(self.adapters), indirect=True)
        if "keyed_adapter" in metafunc.fixturenames:
            keyed = self.adapters if self.keyed_adapters is None else self.keyed_adapters
            metafunc.parametrize("keyed_adapter", list(keyed))

    @pytest.fixture(params=["sync", "async"])
    def mode(self, request: pytest.FixtureRequest) -> str:
        """``sync`` (:class:`llmrouter.Client`) or ``async`` (:class:`llmrouter.AsyncClient`)."""
        return str(request.param)

    @pytest.fixture
    def backend(
        self, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
    ) -> Iterator[Adapter]:
        """The started adapter, its environment set."""
        with self.adapters[str(request.param)]() as adapter:
            for name in adapter.unset_env:
                monkeypatch.delenv(name, raising=False)
            for name, value in adapter.env.items():
                monkeypatch.setenv(name, value)
            adapter.reset()
            yield adapter
            adapter.reset()

    # Answers

    async def test_plain_chat(self, mode: str, backend: Adapter) -> None:
        answer = await chat(mode, backend.url)
        assert isinstance(answer.content, str) and answer.content
        assert answer.role == "assistant"
        assert answer.finish_reason == "stop"
        assert answer.tool_calls == []
        assert_usage(answer.usage)
        resp = answer.response
        assert resp.object == "chat.completion"
        assert isinstance(resp.id, str) and resp.id
        assert isinstance(resp.model, str) and resp.model
        assert isinstance(resp.created, int)
        assert resp.route.backend == backend.url
        assert len(backend.chat_requests()) == 1

    @STREAMED
    @pytest.mark.parametrize("shape", ["string", "parts"])
    async def test_system_prompt_reaches_the_server(
        self, mode: str, backend: Adapter, streamed: bool, shape: str
    ) -> None:
        content: Any = SYSTEM if shape == "string" else [{"type": "text", "text": SYSTEM}]
        messages = [{"role": "system", "content": content}, *HI]
        answer = await chat(mode, backend.url, stream=streamed, messages=messages)
        assert answer.content and answer.finish_reason == "stop"
        body = backend.chat_requests()[0].json
        assert backend.system_of(body) == SYSTEM
        assert backend.turns_of(body) == [("user", LAST_USER_TEXT)]

    @STREAMED
    @pytest.mark.parametrize("shape", ["string", "parts"])
    async def test_multi_turn_reaches_the_server_in_order(
        self, mode: str, backend: Adapter, streamed: bool, shape: str
    ) -> None:
        messages: list[dict[str, Any]] = MULTI_TURN
        if shape == "parts":
            messages = [
                {**m, "content": [{"type": "text", "text": m["content"]}]} for m in messages
            ]
        answer = await chat(mode, backend.url, stream=streamed, messages=messages)
        assert answer.content and answer.finish_reason == "stop"
        body = backend.chat_requests()[0].json
        assert backend.system_of(body) is None
        assert backend.turns_of(body) == [(m["role"], m["content"]) for m in MULTI_TURN]

    async def test_stream_assembles_to_the_plain_answer(self, mode: str, backend: Adapter) -> None:
        plain = await chat(mode, backend.url)
        if not backend.capabilities.stream_usage:
            await assert_refused(mode, backend, **CAPABILITY_REQUESTS["stream_usage"])
            streamed = await chat(mode, backend.url, stream=True)
        else:
            streamed = await chat(
                mode, backend.url, stream=True, stream_options={"include_usage": True}
            )
            assert_usage(streamed.usage)
            assert streamed.usage.model_dump() == plain.usage.model_dump()
        assert streamed.content == plain.content
        assert streamed.role == "assistant"
        assert streamed.finish_reason == plain.finish_reason == "stop"
        assert_one_finish(streamed)
        assert all(c.object == "chat.completion.chunk" for c in streamed.chunks)
        # Every chunk of one stream shares its id, created and model (openai-chat.md 3).
        assert len({(c.id, c.created, c.model) for c in streamed.chunks}) == 1
        assert streamed.chunks[0].id and streamed.chunks[0].model
        assert streamed.response.text == plain.content
        assert streamed.response.route.backend == backend.url

    @STREAMED
    @pytest.mark.parametrize("shape", ["list", "string"])
    async def test_stop_sequence_cuts_the_answer(
        self, mode: str, backend: Adapter, streamed: bool, shape: str
    ) -> None:
        full = (await chat(mode, backend.url)).content
        assert full is not None
        stop = full.split()[1]  # a word in the middle of the answer
        answer = await chat(
            mode, backend.url, stream=streamed, stop=[stop] if shape == "list" else stop
        )
        assert answer.content == full[: full.index(stop)]
        assert answer.finish_reason == "stop"
        if streamed:
            assert_one_finish(answer)

    @STREAMED
    @pytest.mark.parametrize("param", ["max_tokens", "max_completion_tokens"])
    async def test_max_tokens_gives_finish_reason_length(
        self, mode: str, backend: Adapter, streamed: bool, param: str
    ) -> None:
        full = (await chat(mode, backend.url)).content
        extra: dict[str, Any] = {param: 2}
        if streamed and backend.capabilities.stream_usage:
            extra["stream_options"] = {"include_usage": True}
        answer = await chat(mode, backend.url, stream=streamed, **extra)
        assert answer.finish_reason == "length"
        assert answer.content and full and full.startswith(answer.content)
        assert len(answer.content) < len(full)
        if not streamed or backend.capabilities.stream_usage:
            assert_usage(answer.usage)
            assert answer.usage.completion_tokens == 2
        if streamed:
            assert_one_finish(answer)

    # ---------------------------------------------------------------------------------------------
    # Tools and structured output

    @pytest.mark.parametrize(
        ("streamed", "follow_up"),
        [(False, f) for f in FOLLOW_UPS] + [(True, f) for f in FOLLOW_UPS if f != "dumped"],
        ids=[f"plain-{f}" for f in FOLLOW_UPS] + [f"stream-{f}" for f in FOLLOW_UPS[:2]],
    )
    async def test_tool_call_round_trip(
        self, mode: str, backend: Adapter, streamed: bool, follow_up: str
    ) -> None:
        if not backend.capabilities.tools:
            await assert_refused(mode, backend, stream=streamed, **CAPABILITY_REQUESTS["tools"])
            return
        backend.script_tool_call("get_weather", {"city": "Paris"}, stream=streamed)
        answer = await chat(mode, backend.url, stream=streamed, tools=[WEATHER])
        assert answer.finish_reason == "tool_calls"
        assert answer.role == "assistant"
        assert not answer.content
        [call] = answer.tool_calls
        assert call["type"] == "function"
        assert call["name"] == "get_weather"
        assert isinstance(call["id"], str) and call["id"]
        assert isinstance(call["arguments"], str)
        assert json.loads(call["arguments"]) == {"city": "Paris"}
        if streamed:
            assert_one_finish(answer)

        # The follow-up carries the assistant's call and the tool's result, OpenAI-shaped.
        function = {"name": call["name"], "arguments": call["arguments"]}
        assistant: dict[str, Any] = {
            "role": "assistant",
            "content": "" if follow_up == "empty" else None,
            "tool_calls": [{"id": call["id"], "type": "function", "function": function}],
        }
        if follow_up == "dumped":
            assistant = answer.response.choices[0].message.model_dump(exclude_none=True)
        result = {"role": "tool", "tool_call_id": call["id"], "content": "18C and cloudy"}
        messages = [*HI, assistant, result]
        again = await chat(mode, backend.url, stream=streamed, messages=messages, tools=[WEATHER])
        assert again.finish_reason in ("stop", "tool_calls")
        assert again.content or again.tool_calls
        assert len(backend.chat_requests()) == 2
        assert backend.turns_of(backend.chat_requests()[1].json)[-1][1] == "18C and cloudy"

    @pytest.mark.parametrize("choice", ["named", "required"])
    async def test_forced_tool_choice(self, mode: str, backend: Adapter, choice: str) -> None:
        request = dict(CAPABILITY_REQUESTS["tool_choice"])
        if choice == "required":
            request["tool_choice"] = "required"
        if not backend.capabilities.tool_choice:
            await assert_refused(mode, backend, **request)
            return
        answer = await chat(mode, backend.url, **request)
        [call] = answer.tool_calls
        assert call["name"] == "get_weather"
        assert isinstance(json.loads(call["arguments"]), dict)

    @STREAMED
    async def test_json_schema_response_format(
        self, mode: str, backend: Adapter, streamed: bool
    ) -> None:
        if not backend.capabilities.json_schema:
            await assert_refused(mode, backend, stream=streamed, response_format=JSON_SCHEMA)
            return
        answer = await chat(mode, backend.url, stream=streamed, response_format=JSON_SCHEMA)
        assert answer.content is not None
        value = json.loads(answer.content)
        assert set(value) == {"name", "country"}
        assert all(isinstance(v, str) for v in value.values())
        assert answer.finish_reason == "stop"
        assert answer.tool_calls == []

    async def test_parse_returns_the_pydantic_model(self, mode: str, backend: Adapter) -> None:
        if not backend.capabilities.json_schema:
            with pytest.raises(llmrouter.InvalidRequestError):
                await parse(mode, backend.url, response_format=City)
            assert backend.chat_requests() == []
            return
        resp = await parse(mode, backend.url, response_format=City)
        parsed = resp.choices[0].message.parsed
        assert isinstance(parsed, City)
        assert parsed == City.model_validate_json(resp.choices[0].message.content)

    @pytest.mark.parametrize("capability", list(CAPABILITY_REQUESTS))
    async def test_capability_is_served_or_refused_before_sending(
        self, mode: str, backend: Adapter, capability: str
    ) -> None:
        request = dict(CAPABILITY_REQUESTS[capability])
        if not getattr(backend.capabilities, capability):
            await assert_refused(mode, backend, **request)
            return
        stream = bool(request.pop("stream", False))
        answer = await chat(mode, backend.url, stream=stream, **request)
        assert answer.finish_reason is not None
        assert len(backend.chat_requests()) == 1

    # ---------------------------------------------------------------------------------------------
    # Errors

    @STREAMED
    @pytest.mark.parametrize("kind", ERROR_KINDS)
    async def test_status_error_maps_to_the_error_tree(
        self, mode: str, backend: Adapter, kind: str, streamed: bool
    ) -> None:
        status = backend.script_error(kind)
        with pytest.raises(llmrouter.StatusError) as info:
            await chat(mode, backend.url, stream=streamed)
        error = info.value
        assert type(error) is STATUS_ERRORS[kind], repr(error)
        if kind == "5xx":
            assert error.status_code >= 500
        else:
            assert error.status_code == status
        assert error.backend == backend.url
        if kind == "429":
            assert error.retry_after == RETRY_AFTER
            assert error.retryable

    @STREAMED
    async def test_unknown_model_is_not_found(
        self, mode: str, backend: Adapter, streamed: bool
    ) -> None:
        url = backend.missing_model_url
        if url is None:  # the protocol has no model to miss: script the server's 404
            url = backend.url
            backend.script_error("404")
        with pytest.raises(llmrouter.NotFoundError) as info:
            await chat(mode, url, stream=streamed)
        assert info.value.status_code in (400, 404)  # SageMaker: 400 ValidationError
        assert len(backend.chat_requests()) == 1

    @STREAMED
    async def test_wrong_key_is_an_authentication_error(
        self, mode: str, keyed_adapter: str, streamed: bool, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        with self.adapters[keyed_adapter]() as backend:
            if backend.wrong_key_env is None:
                pytest.skip(f"{keyed_adapter}: no wrong_key_env (the backend takes no key)")
            for var in backend.unset_env:
                monkeypatch.delenv(var, raising=False)
            for var, value in {**backend.env, **backend.wrong_key_env}.items():
                monkeypatch.setenv(var, value)
            backend.reset()
            try:
                with pytest.raises(llmrouter.AuthenticationError) as info:
                    await chat(mode, backend.url, stream=streamed)
            finally:
                backend.reset()
            assert info.value.status_code in (401, 403)  # AWS: 403 for a bad signature
            assert "wrong" not in str(info.value) + repr(info.value)  # the key never leaks

    async def test_mid_stream_error_after_content_is_an_interruption(
        self, mode: str, backend: Adapter
    ) -> None:
        sent = backend.script_mid_stream_error()
        got = Answer()
        with pytest.raises(llmrouter.StreamInterruptedError) as info:
            await chat(mode, backend.url, stream=True, into=got)
        assert sent and info.value.partial_text == sent
        assert got.content == sent
        assert isinstance(info.value.__cause__, llmrouter.BackendError)
        assert info.value.backend == backend.url

    @pytest.mark.parametrize(
        ("streamed", "after_content"),
        [(False, False), (True, False), (True, True)],
        ids=["plain", "stream_first_frame", "stream_after_content"],
    )
    async def test_malformed_answer(
        self, mode: str, backend: Adapter, streamed: bool, after_content: bool
    ) -> None:
        sent = backend.script_malformed(stream=streamed, after_content=after_content)
        got = Answer()
        if not after_content:
            with pytest.raises(llmrouter.ProtocolError):
                await chat(mode, backend.url, stream=streamed, into=got)
            assert not got.content
            return
        with pytest.raises(llmrouter.StreamInterruptedError) as info:
            await chat(mode, backend.url, stream=True, into=got)
        assert sent and info.value.partial_text == sent == got.content
        assert isinstance(info.value.__cause__, llmrouter.ProtocolError)

    @STREAMED
    async def test_refused_connection(self, mode: str, backend: Adapter, streamed: bool) -> None:
        url = backend.url_at(free_port())
        with pytest.raises(llmrouter.BackendConnectionError) as info:
            await chat(mode, url, stream=streamed)
        assert info.value.backend == url

    @STREAMED
    async def test_connection_closed_without_an_answer(
        self, mode: str, backend: Adapter, streamed: bool
    ) -> None:
        backend.script_close()
        with pytest.raises(llmrouter.BackendConnectionError):
            await chat(mode, backend.url, stream=streamed)
        assert len(backend.chat_requests()) == 1

    async def test_connection_cut_after_content_is_an_interruption(
        self, mode: str, backend: Adapter
    ) -> None:
        sent = backend.script_cut_after_content()
        got = Answer()
        with pytest.raises(llmrouter.StreamInterruptedError) as info:
            await chat(mode, backend.url, stream=True, into=got)
        assert sent and info.value.partial_text == sent == got.content
        assert isinstance(info.value.__cause__, llmrouter.BackendConnectionError)

"""The gateway under hostile clients, over real loopback sockets: no input gives a 5xx or a
traceback (property-based, with hypothesis, against the running gateway), malformed HTTP gets
OpenAI-shaped 4xx, slow and idle clients are cut off, connections and per-key requests are
capped, and a client that goes away cancels its backend call (logged 499).

The backend is the loopback OpenAI fake (``tests/fakes/openai_fake.py``), which answers every
valid request at once, so a 5xx here can only come from the client's input.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmrouter.server import GatewaySettings, KeyStore
from tests.fakes.openai_fake import Error, OpenAIFake, Stall, Stream, sse
from tests.test_gateway import GatewayThread

KEY = "sk-hostile-test-key-0001"
OTHER = "sk-hostile-test-key-0002"
AUTH = {"Authorization": f"Bearer {KEY}"}
CHAT = "/v1/chat/completions"
HI = [{"role": "user", "content": "hi"}]


class Records(logging.Handler):
    """Every log record of the process, to assert that none carries a traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def tracebacks(self) -> list[str]:
        return [
            f"{r.name}: {r.getMessage()}"
            for r in self.records
            if r.exc_info or "Traceback" in r.getMessage()
        ]

    def access(self) -> list[dict[str, Any]]:
        return [json.loads(r.getMessage()) for r in self.records if r.name == "llmrouter.access"]


@pytest.fixture(scope="module")
def logs() -> Iterator[Records]:
    handler = Records()
    root = logging.getLogger()
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(old)


@pytest.fixture(scope="module")
def fake() -> Iterator[OpenAIFake]:
    with OpenAIFake(models=["m"]) as server:
        yield server


def gateway_for(fake: OpenAIFake, **kwargs: Any) -> GatewayThread:
    from llmrouter.policy import RetryPolicy

    keys = KeyStore([("a", KEY), ("b", OTHER)])
    options = {"retry_policy": RetryPolicy.testing()}
    return GatewayThread(
        GatewaySettings(url=fake.url + "?model=m", keys=keys, client_options=options, **kwargs)
    )


@pytest.fixture(scope="module")
def gateway(fake: OpenAIFake, logs: Records) -> Iterator[GatewayThread]:
    with gateway_for(fake, body_timeout_s=1.0) as gw:
        yield gw


def assert_openai_error(status: int, body: bytes, *, client_fault: bool = True) -> dict[str, Any]:
    """The error object of an answer; a 4xx when the client is at fault."""
    assert 400 <= status < (500 if client_fault else 600), (status, body[:300])
    error = json.loads(body)["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and "code" in error and "param" in error
    return dict(error)


# -- raw HTTP over a socket ------------------------------------------------------------------


def raw(port: int, data: bytes, *, wait: float = 5.0) -> tuple[int, bytes]:
    """Send ``data``, read until the server closes; the status and body (0 and b'' when the
    server closed without answering)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(data)
        return read_response(sock)


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            length = [
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ]
            if sep and length and len(body) >= length[0]:
                break
    except ConnectionResetError:
        pass
    if not data:
        return 0, b""
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def post(body: bytes, *headers: str, path: str = CHAT) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: 127.0.0.1",
        f"Authorization: Bearer {KEY}",
        "Connection: close",
        *headers,
    ]
    if not any(h.lower().startswith(("content-length", "transfer-encoding")) for h in headers):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


# -- bodies: nothing the client sends gives a 5xx --------------------------------------------


def test_deep_nesting_and_lone_surrogates_are_400(gateway: GatewayThread, logs: Records) -> None:
    deep = b'{"messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    unbalanced = b'{"messages": ' + b"[" * 100_000
    surrogate = b'{"messages": [{"role": "user", "content": "\\ud800"}]}'
    many = json.dumps({"messages": HI * 100_000}).encode()
    cases = [
        (deep, "NestedTooDeeply"),
        (unbalanced, "malformed JSON"),
        (surrogate, "surrogate"),
        (many, "over the limit of 2048"),
    ]
    for body, says in cases:
        status, answer = raw(gateway.port, post(body, "Content-Type: application/json"))
        error = assert_openai_error(status, answer)
        assert status == 400
        assert says in error["message"] or says == "NestedTooDeeply", error
    assert not logs.tracebacks()


def test_a_valid_surrogate_pair_passes(gateway: GatewayThread) -> None:
    body = b'{"messages": [{"role": "user", "content": "\\ud83d\\ude00"}]}'
    status, answer = raw(gateway.port, post(body))
    assert status == 200, answer


_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(st.characters())
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=12,
)
_fields = ["model", "stream", "temperature", "max_tokens", "n", "stop", "tools", "tool_choice"]
_fields += ["response_format", "logprobs", "top_logprobs", "logit_bias", "stream_options", "seed"]
_message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "tool"]) | _json},
    optional={"content": _json | st.text(), "tool_calls": _json, "tool_call_id": _json},
)
_chat = st.fixed_dictionaries(
    {"messages": st.lists(_message, max_size=3) | _json},
    optional={name: _json for name in _fields},
)
_fuzz = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class Poster:
    """One keep-alive client for many examples."""

    def __init__(self, gateway: GatewayThread) -> None:
        self.client = httpx2.Client(base_url=gateway.url, headers=AUTH, timeout=10)

    def send(self, content: bytes) -> httpx2.Response:
        r = self.client.post(CHAT, content=content, headers={"Content-Type": "application/json"})
        assert r.status_code < 500, (r.status_code, r.text[:300], content[:300])
        if r.status_code >= 400:
            assert_openai_error(r.status_code, r.content)
        return r


@pytest.fixture(scope="module")
def poster(gateway: GatewayThread) -> Iterator[Poster]:
    p = Poster(gateway)
    yield p
    p.client.close()


@_fuzz
@given(value=_json | _chat)
def test_fuzzed_json_bodies_never_give_a_5xx(poster: Poster, logs: Records, value: Any) -> None:
    poster.send(json.dumps(value).encode())
    assert not logs.tracebacks()


@_fuzz
@given(data=st.binary(max_size=300) | _json.map(lambda v: json.dumps(v).encode()[:-1]))
def test_fuzzed_bytes_never_give_a_5xx(poster: Poster, logs: Records, data: bytes) -> None:
    poster.send(data)
    assert not logs.tracebacks()


# -- headers and framing ---------------------------------------------------------------------


def test_header_abuse_gets_openai_shaped_4xx(gateway: GatewayThread, logs: Records) -> None:
    body = json.dumps({"messages": HI}).encode()
    cases: list[tuple[bytes, int | None]] = [
        (post(body, "X-Big: " + "a" * 20_000), 431),
        (post(body, *[f"X-H{i}: v" for i in range(300)]), None),
        (post(body, "Content-Length: abc"), 400),
        (post(body, "Content-Length: -5"), 400),
        (post(body, f"Content-Length: {len(body)}", "Content-Length: 3"), 400),
        (post(b"zz\r\n" + body, "Transfer-Encoding: chunked"), 400),
        (post(b"5\r\nab\r\n0\r\n\r\n", "Transfer-Encoding: chunked"), None),  # lies: 408
        (post(body, "Transfer-Encoding: chunked", f"Content-Length: {len(body)}"), 400),
        (post(body, "Content-Type: text/plain"), 200),  # parsed as JSON all the same
        (post(b"a=b&c=d", "Content-Type: application/x-www-form-urlencoded"), 400),
        (post(b'{"messages": "\xff\xfe"}', "Content-Type: application/json"), 400),
        (post(body).replace(KEY.encode(), b"\xff\xfe\xfd"), 401),
        (post(body, "X-Name: cafX").replace(b"cafX", b"caf\xe9"), 200),
        (post(body, path="/v1/chat/\xe9"), None),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64, 400),  # a TLS hello
        (b"GET / HTTP/1.1\r\nHost: x\r\n\x00\r\n\r\n", 400),
    ]
    for request, expected in cases:
        status, answer = raw(gateway.port, request)
        assert status < 500, (request[:80], status, answer)
        if expected is not None:
            assert status == expected, (request[:80], status, answer)
        if status >= 400:
            assert_openai_error(status, answer)
    assert not logs.tracebacks()


# -- upstream errors are not relayed verbatim ------------------------------------------------

LLAMA_TRACEBACK = (
    'Traceback (most recent call last):\n  File "/opt/venv/lib/python3.11/site-packages/'
    'llama_cpp/llama_grammar.py", line 1123, in visit\n    raise ValueError(...)\n'
    "ValueError: Unrecognized schema: {'type': 'object', 'patternProperties': {}}"
)


def test_upstream_internals_are_not_relayed(fake: OpenAIFake, logs: Records) -> None:
    body = {"error": {"message": LLAMA_TRACEBACK, "type": "internal_server_error", "code": 400}}
    for debug in (False, True):
        with gateway_for(fake, debug=debug) as gw:
            fake.script(Error(400, body))
            r = httpx2.post(gw.base + "/chat/completions", json={"messages": HI}, headers=AUTH)
            assert r.status_code == 400
            error = r.json()["error"]
            assert "BadRequestError" in error["message"]
            assert "Traceback" not in error["message"] and "/opt/venv" not in error["message"]
            assert ("upstream_message" in error) is debug
            if debug:
                assert "llama_grammar.py" in error["upstream_message"]
    logged = [r.getMessage() for r in logs.records if "backends said" in r.getMessage()]
    assert logged and "llama_grammar.py" in logged[-1]


def test_upstream_secrets_are_masked_and_paths_cut(fake: OpenAIFake) -> None:
    text = "invalid key sk-abcdefghijklmnop1234 in /srv/app/config/keys.yaml: bad"
    with gateway_for(fake, debug=True) as gw:
        fake.script(Error(400, {"error": {"message": text}}))
        r = httpx2.post(gw.base + "/chat/completions", json={"messages": HI}, headers=AUTH)
    error = r.json()["error"]
    assert "sk-abcdef" not in json.dumps(error) and "keys.yaml" not in error["message"]
    assert "<path>" in error["message"]


# -- limits on one request -------------------------------------------------------------------


def test_message_and_prompt_limits(fake: OpenAIFake) -> None:
    with gateway_for(fake, max_messages=3, max_prompt_tokens=50) as gw:
        url = gw.base + "/chat/completions"
        r = httpx2.post(url, json={"messages": HI * 4}, headers=AUTH)
        assert r.status_code == 400 and r.json()["error"]["code"] == "too_many_messages"
        long = [{"role": "user", "content": "word " * 100}]
        r = httpx2.post(url, json={"messages": long}, headers=AUTH)
        assert r.status_code == 400 and r.json()["error"]["code"] == "prompt_too_large"
        assert httpx2.post(url, json={"messages": HI * 3}, headers=AUTH).status_code == 200


# -- slow and idle clients -------------------------------------------------------------------


def _slow_headers(port: int, results: list[float], started: float) -> None:
    """Open a connection and send one header line every 0.25 s until the server closes it."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(0.25)
    try:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\n")
        for i in range(100):
            try:
                if sock.recv(4096) == b"":
                    break
            except TimeoutError:
                pass
            except ConnectionError:
                break
            try:
                sock.sendall(f"X-Slow-{i}: 1\r\n".encode())
            except ConnectionError:
                break
        results.append(time.monotonic() - started)
    finally:
        sock.close()


def test_slowloris_is_cut_off_and_normal_requests_keep_their_latency(
    fake: OpenAIFake,
) -> None:
    with gateway_for(fake, header_timeout_s=1.0) as gw:
        url = gw.base + "/chat/completions"
        with httpx2.Client(headers=AUTH, timeout=10) as client:
            quiet = []
            for _ in range(10):
                t = time.monotonic()
                assert client.post(url, json={"messages": HI}).status_code == 200
                quiet.append(time.monotonic() - t)
            closed: list[float] = []
            started = time.monotonic()
            slow = [
                threading.Thread(target=_slow_headers, args=(gw.port, closed, started))
                for _ in range(200)
            ]
            for thread in slow:
                thread.start()
            busy = []
            for _ in range(10):
                t = time.monotonic()
                assert client.post(url, json={"messages": HI}).status_code == 200
                busy.append(time.monotonic() - t)
            for thread in slow:
                thread.join(10)
    assert len(closed) == 200
    assert max(closed) < 1.0 + 2.0, max(closed)  # every one cut at its timeout (plus slack)
    assert sorted(busy)[5] < max(0.25, 5 * sorted(quiet)[5]), (busy, quiet)


def test_a_slow_body_gets_408(gateway: GatewayThread) -> None:
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        t = time.monotonic()
        sock.sendall(post(b'{"messa', "Content-Length: 100"))
        status, answer = read_response(sock)
        took = time.monotonic() - t
    error = assert_openai_error(status, answer)
    assert status == 408 and error["code"] == "request_timeout"
    assert 0.9 < took < 3.0


def test_an_idle_keepalive_connection_is_closed(fake: OpenAIFake) -> None:
    request = post(json.dumps({"messages": HI}).encode())
    request = request.replace(b"Connection: close", b"Connection: keep-alive")
    with gateway_for(fake, keepalive_timeout_s=0.5) as gw:
        sock = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
        with sock:
            sock.sendall(request)
            assert read_response(sock)[0] == 200
            t = time.monotonic()
            assert sock.recv(1024) == b""  # the server closed it
            assert time.monotonic() - t < 2.5


def test_connection_cap_refuses_new_connections_and_keeps_old_ones(fake: OpenAIFake) -> None:
    body = json.dumps({"messages": HI}).encode()
    with gateway_for(fake, max_connections=4, header_timeout_s=5.0) as gw:
        held = [socket.create_connection(("127.0.0.1", gw.port), timeout=5) for _ in range(4)]
        try:
            time.sleep(0.1)  # let the gateway accept them
            status, answer = raw(gw.port, post(body))
            error = assert_openai_error(status, answer, client_fault=False)
            assert status == 503 and error["code"] == "too_many_connections"
            extra = [socket.create_connection(("127.0.0.1", gw.port), timeout=5) for _ in range(4)]
            time.sleep(0.1)
            status, _ = raw(gw.port, post(body))  # past twice the cap: closed at once
            assert status == 0
            for sock in extra:
                sock.close()
            held[0].sendall(post(body))  # an existing connection is still served
            assert read_response(held[0])[0] == 200
        finally:
            for sock in held:
                sock.close()


def test_per_key_in_flight_cap_is_429_and_released_on_disconnect(
    fake: OpenAIFake, logs: Records
) -> None:
    body = json.dumps({"messages": HI}).encode()
    with gateway_for(fake, max_in_flight_per_key=2) as gw:
        fake.script(Stall(), Stall())
        seen = len(fake.chat_requests)
        stalled = [socket.create_connection(("127.0.0.1", gw.port), timeout=5) for _ in range(2)]
        for sock in stalled:
            sock.sendall(post(body))
        assert fake.wait_for(lambda: len(fake.chat_requests) >= seen + 2, 5)
        r = httpx2.post(gw.base + "/chat/completions", content=body, headers=AUTH)
        assert r.status_code == 429 and r.headers["Retry-After"] == "1"
        assert r.json()["error"]["code"] == "too_many_requests_in_flight"
        other = {"Authorization": f"Bearer {OTHER}"}
        assert httpx2.post(gw.base + "/chat/completions", content=body, headers=other).is_success
        before = fake.disconnects
        for sock in stalled:
            sock.close()
        assert fake.wait_for(lambda: fake.disconnects >= before + 2, 5)  # upstream cancelled
        deadline = time.monotonic() + 5
        while gw_in_flight(gw) and time.monotonic() < deadline:
            time.sleep(0.02)
        r = httpx2.post(gw.base + "/chat/completions", content=body, headers=AUTH)
        assert r.status_code == 200
    statuses = [e["status"] for e in logs.access()]
    assert statuses.count(499) >= 2


def gw_in_flight(gw: GatewayThread) -> int:
    from llmrouter.server.app import GATEWAY

    assert gw.runner is not None
    return gw.runner.app[GATEWAY].in_flight


# -- the client goes away: the backend call is cancelled -------------------------------------


def test_a_plain_request_abandoned_cancels_the_backend_call(
    fake: OpenAIFake, logs: Records
) -> None:
    with gateway_for(fake) as gw:
        fake.script(Stall())
        before = fake.disconnects
        with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
            sock.sendall(post(json.dumps({"messages": HI}).encode()))
            time.sleep(0.3)
        t = time.monotonic()
        assert fake.wait_for(lambda: fake.disconnects > before, 5)
        assert time.monotonic() - t < 2
    entry = logs.access()[-1]
    assert (entry["status"], entry["error"]) == (499, "ClientDisconnected")


def test_a_stream_abandoned_mid_way_cancels_the_backend_stream(
    fake: OpenAIFake, logs: Records
) -> None:
    frames = sse(*[f"w{i} " for i in range(200)])
    with gateway_for(fake) as gw:
        fake.script(Stream(frames, delay=0.05))
        before = fake.disconnects
        body = json.dumps({"messages": HI, "stream": True}).encode()
        with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
            sock.sendall(post(body))
            got = b""
            while b"w3 " not in got:
                got += sock.recv(4096)
        assert fake.wait_for(lambda: fake.disconnects > before, 5)
    entry = logs.access()[-1]
    assert (entry["status"], entry["error"], entry["stream"]) == (499, "ClientDisconnected", True)

"""A client that goes away stops the work behind it, with the real engines: the llama.cpp
server (``python -m llama_cpp.server``) behind ``http://``, and llama.cpp in this process
behind ``local://``.

"Generation stopped" is measured, not assumed: each test first times a few tokens of a long
answer (400 tokens, end-of-sequence forbidden through ``logit_bias`` so the model cannot stop on
its own), hangs up, and then asks the same engine for one token. An engine still generating the
abandoned answer would make that request wait for the rest of it (hundreds of tokens); a
stopped one answers at once.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from llmrouter.policy import RetryPolicy
from llmrouter.server import GatewaySettings
from tests.test_gateway import GatewayThread
from tests.test_gateway_hostile import Records, logs, post  # noqa: F401 (logs: a fixture)

COUNT = [{"role": "user", "content": "Count from 1 to 1000, separated by commas."}]
# SmolLM2's <|endoftext|> (0) and <|im_end|> (2): forbidden, so the answer runs to max_tokens.
NO_EOS = {"0": -100, "2": -100}
LONG = 400
SEEN = 12  # content chunks read before hanging up


def long_body(stream: bool) -> bytes:
    body: dict[str, Any] = {"messages": COUNT, "max_tokens": LONG, "temperature": 0}
    body["logit_bias"] = NO_EOS
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


def read_some_tokens(port: int) -> float:
    """Stream a long answer through the gateway, read :data:`SEEN` content chunks, hang up;
    the seconds per token observed."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    try:
        sock.sendall(post(long_body(stream=True)))
        buffer, stamps = b"", []
        while len(stamps) < SEEN:
            data = sock.recv(65536)
            assert data, "the gateway closed the stream early"
            buffer += data
            while b"\n\n" in buffer:
                event, buffer = buffer.split(b"\n\n", 1)
                if b'"content":"' in event.replace(b" ", b""):
                    stamps.append(time.monotonic())
    finally:
        sock.close()  # the client goes away mid-stream
    return (stamps[-1] - stamps[0]) / (len(stamps) - 1)


def one_token(url: str) -> float:
    """Seconds for a one-token answer from ``url`` (a /v1 base)."""
    t = time.monotonic()
    r = httpx2.post(
        url + "/chat/completions",
        json={"messages": COUNT, "max_tokens": 1, "model": "smollm2"},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    return time.monotonic() - t


def assert_stopped(per_token: float, waited: float) -> None:
    rest = (LONG - SEEN) * per_token  # what finishing the abandoned answer would have taken
    assert waited < 0.5 * rest, f"waited {waited:.2f} s; the rest would take {rest:.2f} s"


def gateway_for(url: str) -> GatewayThread:
    options = {"retry_policy": RetryPolicy.testing(), "timeout": 120}
    return GatewayThread(GatewaySettings(url=url, client_options=options))


@pytest.fixture(scope="module")
def llama_gateway(llama_server: str) -> Iterator[GatewayThread]:
    with gateway_for(llama_server + "?model=smollm2") as gw:
        yield gw


@pytest.mark.llama_server
def test_llama_server_stops_generating_when_the_stream_client_leaves(
    llama_server: str,
    llama_gateway: GatewayThread,
    logs: Records,  # noqa: F811
) -> None:
    per_token = read_some_tokens(llama_gateway.port)
    assert_stopped(per_token, one_token(llama_server))
    entry = next(e for e in reversed(logs.access()) if e["stream"])
    assert (entry["status"], entry["error"]) == (499, "ClientDisconnected")


@pytest.mark.llama_server
def test_llama_server_plain_request_abandoned_is_cancelled_and_logged_499(
    llama_gateway: GatewayThread,
    logs: Records,  # noqa: F811
) -> None:
    # llama-cpp-python's server runs a plain completion in a worker thread and does not stop it
    # when its client leaves, so here the gateway's side is what is checked: the backend call
    # is cancelled at once (its connection closed) and the request logged as 499.
    with socket.create_connection(("127.0.0.1", llama_gateway.port), timeout=10) as sock:
        sock.sendall(post(long_body(stream=False)))
        time.sleep(0.5)
    t = time.monotonic()
    while time.monotonic() - t < 5:
        done = [e for e in logs.access() if e["stream"] is False and e["status"] == 499]
        if done:
            break
        time.sleep(0.02)
    assert done, "no 499 in the access log"
    assert time.monotonic() - t < 2


@pytest.mark.local_engine
def test_local_engine_stops_when_the_client_leaves(
    gguf_path: str,
    logs: Records,  # noqa: F811
) -> None:
    with gateway_for(f"local://{gguf_path}") as gw:
        assert one_token(gw.base) < 60  # loads the engine
        per_token = read_some_tokens(gw.port)  # a stream abandoned mid-way
        assert_stopped(per_token, one_token(gw.base))
        with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
            sock.sendall(post(long_body(stream=False)))  # a plain request abandoned
            time.sleep(SEEN * per_token)
        assert_stopped(per_token, one_token(gw.base))
    statuses = [(e["stream"], e["status"]) for e in logs.access()[-4:]]
    assert (True, 499) in statuses and (False, 499) in statuses

"""The gateway's pure parts: token buckets, keys, the Prometheus text, error mapping, body
checks, upstream text made safe, the server's import graph; and the ``llmrouter serve``
command run as a subprocess."""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest

from llmrouter.errors import (
    AllBackendsFailedError,
    BackendConnectionError,
    BackendTimeoutError,
    ConfigError,
    ContextLengthError,
    InvalidRequestError,
    NotFoundError,
    ServerError,
    StreamInterruptedError,
)
from llmrouter.events import Event
from llmrouter.route import Attempt
from llmrouter.server import GatewaySettings, KeyStore, RateLimiter, TokenBucket, check_bind
from llmrouter.server.intake import estimate_prompt, nesting_depth
from llmrouter.server.metrics import GatewayMetrics, Histogram
from llmrouter.server.responses import from_exception, stream_error_event
from llmrouter.server.settings import check_settings
from llmrouter.server.upstream import safe_message, scrub_secrets


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- rate limits ----------------------------------------------------------------------------


def test_token_bucket_refills_at_its_rate() -> None:
    bucket = TokenBucket(3, 1.0, now=0.0)
    assert [bucket.take(1, 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(1, 0.0) == pytest.approx(1.0)
    assert bucket.take(1, 0.5) == pytest.approx(0.5)
    assert bucket.take(1, 1.0) == 0.0
    bucket.adjust(5, 1.0)  # debt
    assert bucket.take(1, 1.0) == pytest.approx(6.0)
    assert bucket.take(1, 100.0) == 0.0
    assert bucket.level == pytest.approx(2.0)  # capped at capacity, then one taken


def test_request_limit_per_key() -> None:
    clock = FakeClock()
    limiter = RateLimiter(requests_per_minute=2, clock=clock)
    assert limiter.admit_request("a") is None
    assert limiter.admit_request("a") is None
    denial = limiter.admit_request("a")
    assert denial is not None and denial.limit == "requests"
    assert denial.retry_after == pytest.approx(30.0)
    assert denial.retry_after_header == "30"
    assert limiter.admit_request("b") is None  # another key has its own bucket
    clock.now += 30
    assert limiter.admit_request("a") is None


def test_token_limit_reserves_then_settles() -> None:
    clock = FakeClock()
    limiter = RateLimiter(tokens_per_minute=600, clock=clock)  # 10 tokens/s
    reserved, denial = limiter.reserve_tokens("a", 100)
    assert (reserved, denial) == (100, None)
    limiter.settle_tokens("a", reserved, 700)  # used 600 more than reserved: 100 in debt
    reserved, denial = limiter.reserve_tokens("a", 50)
    assert reserved == 0 and denial is not None
    assert denial.retry_after == pytest.approx(15.0)  # (50 + 100) / 10
    clock.now += 15
    assert limiter.reserve_tokens("a", 50) == (50, None)
    # One request larger than the bucket still passes when the bucket is full.
    assert limiter.reserve_tokens("big", 10_000) == (600, None)
    limiter.settle_tokens("big", 600, 0)  # failed: the reservation comes back
    assert limiter.reserve_tokens("big", 600) == (600, None)


def test_no_limits_admit_everything() -> None:
    limiter = RateLimiter()
    assert not limiter.enabled
    assert limiter.admit_request("a") is None
    assert limiter.reserve_tokens("a", 10**9) == (0, None)
    with pytest.raises(ValueError, match="positive"):
        RateLimiter(requests_per_minute=0)


# -- keys -----------------------------------------------------------------------------------


def test_keys_from_env_and_file(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("# team keys\n\nalpha:sk-alpha-1\nsk-bare-2\n")
    keys = KeyStore.load(keys_file=path, env={"LLMROUTER_API_KEYS": "beta:sk-beta-3, sk-bare-4"})
    ids = keys.key_ids
    assert ids[0] == "beta" and ids[2] == "alpha"
    assert ids[1].startswith("key-") and ids[3].startswith("key-")
    assert keys.identify("Bearer sk-alpha-1") == "alpha"
    assert keys.identify("bearer sk-beta-3") == "beta"
    assert keys.identify("Bearer sk-bare-2") == ids[3]
    assert keys.identify("Bearer sk-alpha") is None
    assert keys.identify("sk-alpha-1") is None
    assert keys.identify("Basic sk-alpha-1") is None
    assert keys.identify(None) is None
    assert "sk-" not in repr(keys)


def test_no_keys_means_anonymous_and_loopback_only() -> None:
    keys = KeyStore.load(env={})
    assert not keys.enabled
    assert keys.identify(None) == "anonymous"
    check_bind("127.0.0.1", keys)
    check_bind("::1", keys)
    check_bind("localhost", keys)
    with pytest.raises(ConfigError, match=r"refusing to listen on 0\.0\.0\.0 without API keys"):
        check_bind("0.0.0.0", keys)
    check_bind("0.0.0.0", KeyStore([("a", "sk-1")]))


def test_malformed_key_entries_name_the_line_not_the_key(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("ok:sk-fine\nbroken: \n")
    with pytest.raises(ConfigError, match="line 2") as info:
        KeyStore.load(keys_file=path, env={})
    assert "sk-fine" not in str(info.value)
    with pytest.raises(ConfigError, match="twice"):
        KeyStore([("a", "sk-1"), ("a", "sk-2")])
    with pytest.raises(ConfigError, match="keys-file"):
        KeyStore.load(keys_file=tmp_path / "missing", env={})


# -- metrics --------------------------------------------------------------------------------


def test_histogram_buckets_are_cumulative() -> None:
    h = Histogram("lat_seconds", "Latency.", ("backend",), buckets=(0.1, 1.0))
    for value in (0.05, 0.5, 0.7, 3.0):
        h.observe(("a",), value)
    lines = list(h.lines())
    assert lines == [
        'lat_seconds_bucket{backend="a",le="0.1"} 1',
        'lat_seconds_bucket{backend="a",le="1"} 3',
        'lat_seconds_bucket{backend="a",le="+Inf"} 4',
        'lat_seconds_sum{backend="a"} 4.25',
        'lat_seconds_count{backend="a"} 4',
    ]


def test_events_feed_per_backend_counters() -> None:
    metrics = GatewayMetrics(lambda: [('http://a"b\\', "open")])
    error = BackendConnectionError("refused", backend="a")
    for event in (
        Event("attempt_start", "a", 1),
        Event("failure", "a", 1, error=error),
        Event("failover", "a", 1, error=error),
        Event("retry", "a", 2),
        Event("breaker", "a", detail="closed->open"),
        Event("skip", "a"),
    ):
        metrics.on_event(event)
    text = metrics.render()
    assert 'llmrouter_backend_attempts_total{backend="a"} 1' in text
    assert 'llmrouter_backend_errors_total{backend="a",error="BackendConnectionError"} 1' in text
    assert 'llmrouter_backend_failovers_total{backend="a"} 1' in text
    assert 'llmrouter_backend_retries_total{backend="a"} 1' in text
    assert 'llmrouter_backend_breaker_transitions_total{backend="a",state="open"} 1' in text
    assert 'llmrouter_backend_skips_total{backend="a"} 1' in text
    assert 'llmrouter_backend_breaker_state{backend="http://a\\"b\\\\"} 2' in text  # escaped
    assert text.endswith("\n")
    for line in text.splitlines():
        assert line.startswith("#") or " " in line


# -- error mapping --------------------------------------------------------------------------


def test_errors_map_to_statuses() -> None:
    invalid = from_exception(InvalidRequestError("temperature: bad", param="temperature"))
    assert (invalid.status, invalid.param, invalid.type) == (
        400,
        "temperature",
        "invalid_request_error",
    )
    ctx = from_exception(ContextLengthError("too long", status_code=400, backend="b"))
    assert (ctx.status, ctx.code) == (400, "context_length_exceeded")
    refused = BackendConnectionError("refused", backend="http://a/v1")
    timeout = BackendTimeoutError("slow", backend="http://b/v1")
    server = ServerError("boom", status_code=500, backend="http://c/v1")
    assert from_exception(refused).status == 502
    assert from_exception(timeout).status == 504
    assert from_exception(refused, nothing_usable=True).status == 503
    both = AllBackendsFailedError([Attempt("http://b/v1", timeout, 0.3), Attempt("x", timeout)])
    assert from_exception(both).status == 504
    mixed = AllBackendsFailedError([Attempt("http://a/v1", refused), Attempt("c", server)])
    err = from_exception(mixed)
    assert err.status == 502 and err.headers == {"x-should-retry": "false"}
    assert err.message.startswith("all 2 attempt(s) failed:")
    assert [a["error"] for a in err.attempts or []] == ["BackendConnectionError", "ServerError"]
    skipped = AllBackendsFailedError([Attempt("a", refused, skipped=True)])
    assert from_exception(skipped).status == 503
    missing = NotFoundError("no model", status_code=404, backend="a")
    assert from_exception(missing).status == 404
    assert from_exception(RuntimeError("secret detail")).message == "internal error"


def test_stream_error_event_shape() -> None:
    event = stream_error_event(StreamInterruptedError("cut after 3 characters", backend="b"))
    assert event.startswith(b"data: ") and event.endswith(b"\n\n")
    error = json.loads(event[6:])["error"]
    assert error["type"] == "stream_interrupted" and "cut after" in error["message"]


def test_upstream_text_is_relayed_safely() -> None:
    trace = 'Traceback (most recent call last):\n  File "/srv/x.py", line 3, in f\nValueError: x'
    assert safe_message(trace) == ""
    assert safe_message("bad schema in /usr/lib/python3/site-packages/llama_cpp/g.py\nmore") == (
        "bad schema in <path>"
    )
    assert safe_message("max_tokens must be <= 2048") == "max_tokens must be <= 2048"
    assert len(safe_message("x" * 1000)) == 200
    masked = scrub_secrets('Bearer abcdef123456 "api_key": "zzzz9999" sk-proj-0123456789abcdef')
    assert "abcdef123456" not in masked and "zzzz9999" not in masked and "0123456789" not in masked
    bad = ServerError(trace, status_code=500, backend="http://b/v1")
    err = from_exception(AllBackendsFailedError([Attempt("http://b/v1", bad)]))
    assert "Traceback" not in err.message and "ServerError" in err.message
    assert err.attempts is not None and "x.py" not in json.dumps(err.attempts)
    assert err.upstream is not None and "x.py" in err.upstream
    assert b"upstream_message" not in err.body() and b"x.py" in err.body(debug=True)


# -- request bodies -------------------------------------------------------------------------


def test_nesting_depth_counts_on_the_raw_bytes() -> None:
    assert nesting_depth(b'{"a": [1, {"b": []}], "c": "[[[[["}', 10) == 4
    assert nesting_depth(b"[]", 10) == 1 and nesting_depth(b"7", 10) == 0
    assert nesting_depth(b"[" * 100_000 + b"]" * 100_000, 64) == 65  # stops past the limit
    assert nesting_depth(b'["\\", ""]]]"]', 10) == 1  # escapes inside strings


def test_prompt_estimate() -> None:
    messages = [{"role": "user", "content": "x" * 400}, {"role": "user", "content": [
        {"type": "text", "text": "y" * 40}, {"type": "image_url", "image_url": {"url": "z" * 999}}
    ]}]  # fmt: skip
    assert estimate_prompt(messages, None) == 110 + 8


def test_settings_are_checked() -> None:
    check_settings(GatewaySettings())
    for field in ("header_timeout_s", "max_connections", "max_messages", "max_json_depth"):
        with pytest.raises(ConfigError):
            check_settings(GatewaySettings(**{field: 0}))


def test_server_modules_import_no_circle() -> None:
    """The server's modules import one another as a tree (type-checking and function-local
    imports included): ``settings`` sits below ``app`` and ``routes`` (issue 12, item 5)."""
    folder = Path(__file__).resolve().parent.parent / "llmrouter" / "server"
    graph: dict[str, set[str]] = {}
    for path in folder.glob("*.py"):
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        graph[path.stem] = {
            m.rsplit(".", 1)[1] for m in found if m.startswith("llmrouter.server.")
        } - {path.stem}
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, " -> ".join((*path, module))
        if module in done:
            return
        for child in graph.get(module, ()):
            visit(child, (*path, module))
        done.add(module)

    for module in graph:
        if module != "__init__":
            visit(module, ())


# -- the command ----------------------------------------------------------------------------


def _env() -> dict[str, str]:
    drop = ("LLMROUTER_URL", "OPENAI_BASE_URL", "OPENAI_API_KEY", "LLMROUTER_API_KEYS")
    return {k: v for k, v in os.environ.items() if k not in drop}


def test_serve_refuses_a_public_host_without_keys(closed_url: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "llmrouter", "serve", "--host", "0.0.0.0", "--url", closed_url],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
    )
    assert out.returncode == 1
    assert "refusing to listen on 0.0.0.0 without API keys" in out.stderr
    assert "Traceback" not in out.stderr


def test_serve_runs_and_stops_on_sigterm(closed_url: str, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("ops:sk-serve-test-1\n")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llmrouter",
            "serve",
            "--port",
            "0",
            "--url",
            closed_url,
            "--keys-file",
            str(keys),
            "--grace",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        assert "listening on http://127.0.0.1:" in banner
        assert "authentication: 1 API key(s)" in banner and "sk-serve" not in banner
        base = banner.split("listening on ")[1].split()[0]
        assert httpx2.get(base + "/health", timeout=10).json() == {"status": "ok"}
        r = httpx2.get(base + "/v1/models", timeout=10)
        assert r.status_code == 401
        r = httpx2.post(
            base + "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "hi"}], "model": "m"},
            headers={"Authorization": "Bearer sk-serve-test-1"},
            timeout=30,
        )
        assert r.status_code == 502
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert "shutting down" in stdout
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert [(e["path"], e["status"], e["key_id"]) for e in lines] == [
        ("/v1/models", 401, None),
        ("/v1/chat/completions", 502, "ops"),
    ]
    assert "sk-serve-test-1" not in stderr

"""How llmrouter behaves when 30 % of connections to a load-balanced group misbehave.

Usage::

    python bench/faults.py [--quick] [--json out.json] [--requests N] [--concurrency C]
                           [--fault-rate R] [--seed S]

Method
------
Processes. The upstream is ``bench/_fakeserver.py`` (raw asyncio, cached responses) in its own
process, so the "model" costs microseconds; it is run through this file (``--upstream``) only
to add ``Connection: close`` to the answers of requests that ask to close (the proxy asks for
one request per connection; without the header the client would pool connections the proxy is
about to drop, and a stale keep-alive race would add unscripted failures). Three
:class:`tests.fakes.fault_proxy.FaultProxy` instances (one per backend) run in a second child
process (this file with ``--proxies``), so their work neither shares the client's GIL nor shows
up in its open-socket count. The client (``AsyncClient("A | B | C")``, one load-balanced
group) runs in this process, after a warm-up request (imports) on a throw-away client.

Faults. Each proxy gets a seeded (``random.Random(seed + i)``) script, through its public
``script()`` call, much longer than the run needs: every connection independently draws a fault
with probability ``--fault-rate`` (0.3), the kind uniformly from :data:`FAULT_KINDS`: reset,
blackhole, delay 0.2 s, reset / stall after a random 1-700 response bytes (in the headers, in
the first chunk or later), 429 with ``Retry-After: 1`` (honoured) and ``Retry-After: 120``
(over the policy's cap: fail over), 500/502/503/504/529, raw malformed SSE, raw truncated JSON,
a raw non-HTTP answer, and ``drop_done``. The proxy serves one request per connection, so a
connection is a call. Half of the requests (seeded) stream 8 chunks, half do not. The seeds
fix each proxy's sequence of faults and each request's kind; which request meets which fault
still depends on timing, so two runs differ a little.

Client. Each backend URL carries ``ttft_timeout=0.5&read_timeout=0.5`` so blackholes and
stalls are abandoned; every request has ``timeout=5`` (total, failover included); the default
:class:`RetryPolicy`, :class:`RetryBudget` and circuit breakers. ``--concurrency`` (100) workers
share ``--requests`` (2,000); each request (for a stream: open, read to the end, close) runs
under ``asyncio.wait_for`` with an outer bound of 3x its timeout: one that hits it is "hung".

Figures.

* outcomes: succeeded; failed with a typed ``llmrouter`` error, classified: deadline spent,
  every backend / retry exhausted, or a stream interrupted after partial content reached the
  caller (never retried, by design) are expected; anything else, including a stream that
  raises after the whole answer and its ``finish_reason`` arrived, is flagged. Untyped
  exceptions (must be 0); hung (must be 0); successes whose content is not exactly what the
  upstream sent (must be 0: a truncated answer must never pass as a success).
* calls per backend: the proxies' connection counts, which must equal the attempts the client
  announced (``attempt_start`` events); throughput and the CPU time of each process (at
  concurrency 100 on two cores the run is throughput-bound, so latencies include queueing).
* retry budget: ``retry`` events, budget refusals (``give_up`` events saying so), the peak
  share of the budget spent (``retries / (retries + available)`` from ``budget.stats()``,
  sampled every 50 ms), and ``budget.stats()`` at the end (its window: the last 10 s only).
* latency added by failover: end-to-end latency of successful requests whose route has more
  than one attempt, p50 and p99, minus the p50 of those served at the first attempt; also per
  kind of first error (a reset costs a round trip, a blackhole the 0.5 s time-to-first-token).
* leaks: ``asyncio.all_tasks()`` other than the main task after ``client.aclose()``, and
  entries of ``/proc/self/fd`` that are sockets, before the client was built vs after it was
  closed (after a 0.25 s grace period for transports' ``connection_lost`` callbacks).

Micro-measurements (no proxy; the fake is called directly, sequential requests, interleaved
round-robin with the baseline so noise from other work hits both alike; medians):

* failover from a refused backend: ``"http://127.0.0.1:<closed port>/v1, <fake>"`` vs
  ``"<fake>"``; the first backend's breaker is set never to open, else after 5 refusals every
  request would measure the breaker skip instead. Target: under 5 ms added.
* skipping an open breaker: the same chain with ``CircuitBreaker(failure_threshold=1,
  cooldown=3600)``, opened by one request, vs ``"<fake>"``. Target: under 0.1 ms added.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _fakeserver import spawn_port_process  # bench/ is on sys.path when run as a script

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MODEL = "m"
MESSAGES = [{"role": "user", "content": "Say hello."}]
CHUNKS = 8  # the fake streams max_tokens chunks: " tok" x (N - 1), then finish_reason
STREAM_TEXT = " tok" * (CHUNKS - 1)
JSON_TEXT = "Hello there, how can I help?"  # bench/_fakeserver.py's completion
TTFT_TIMEOUT = 0.5
READ_TIMEOUT = 0.5
TIMEOUT = 5.0
OUTER_FACTOR = 3.0
SCRIPT_LENGTH = 20_000  # faults scripted per proxy: far more connections than a run makes

FULL = {"requests": 2000, "refused_samples": 200, "skip_samples": 1000}
QUICK = {"requests": 300, "refused_samples": 200, "skip_samples": 400}

# ---------------------------------------------------------------------------------------------
# Faults (built in the proxy process)

_ERROR_BODY = b'{"error":{"message":"injected","type":"server_error"}}'
_BAD_SSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
    b'data: {"id":"x","object":"chat.completion.chunk","choices":[{"delta":{"content":"Hel\n\n'
    b"data: [DONE]\n\n"
)
_TRUNCATED_JSON = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 400\r\n"
    b'Connection: close\r\n\r\n{"id":"chatcmpl-x","object":"chat.completion","choi'
)
_NOT_HTTP = b"SSH-2.0-OpenSSH_9.6\r\n\r\n"

FAULT_KINDS = (
    "reset",
    "blackhole",
    "delay",
    "reset_after",
    "stall_after",
    "429_short",
    "429_long",
    "500",
    "502",
    "503",
    "504",
    "529",
    "raw_bad_sse",
    "raw_truncated_json",
    "raw_not_http",
    "drop_done",
)


def make_fault(label: str, rng: random.Random) -> Any:
    from tests.fakes.fault_proxy import Fault

    if label in ("reset", "blackhole", "drop_done"):
        return Fault(label)
    if label == "delay":
        return Fault("delay", seconds=0.2)
    if label in ("reset_after", "stall_after"):
        return Fault(label, after=rng.randint(1, 700))
    if label == "429_short":
        return Fault("respond", status=429, headers={"Retry-After": "1"}, body=_ERROR_BODY)
    if label == "429_long":
        return Fault("respond", status=429, headers={"Retry-After": "120"}, body=_ERROR_BODY)
    if label.isdigit():
        return Fault("respond", status=int(label), body=_ERROR_BODY)
    raw = {"raw_bad_sse": _BAD_SSE, "raw_truncated_json": _TRUNCATED_JSON}
    return Fault("raw", body=raw.get(label, _NOT_HTTP))


def fault_script(rng: random.Random, rate: float, length: int) -> tuple[list[Any], list[str]]:
    """``length`` faults, each drawn independently, and their labels ("pass" when none)."""
    from tests.fakes.fault_proxy import Fault

    faults: list[Any] = []
    labels: list[str] = []
    for _ in range(length):
        if rng.random() < rate:
            label = rng.choice(FAULT_KINDS)
            faults.append(make_fault(label, rng))
        else:
            label = "pass"
            faults.append(Fault())
        labels.append(label)
    return faults, labels


def serve_proxies(upstream_port: int, seed: int, rate: float) -> None:
    """Child process: three scripted proxies; answer ``stats`` lines until stdin closes."""
    from tests.fakes.fault_proxy import FaultProxy

    with contextlib.ExitStack() as stack:
        proxies = []
        labels = []
        for i in range(3):
            proxy = stack.enter_context(FaultProxy(upstream_port))
            faults, names = fault_script(random.Random(seed + i), rate, SCRIPT_LENGTH)
            proxy.script(*faults)
            proxies.append(proxy)
            labels.append(names)
        print("PORTS", *(p.port for p in proxies), flush=True)
        for line in sys.stdin:
            if line.strip() == "stats":
                stats = [
                    {
                        "connections": p.connections,
                        "faults": dict(Counter(names[: p.connections])),
                    }
                    for p, names in zip(proxies, labels, strict=True)
                ]
                print(json.dumps(stats), flush=True)


# ---------------------------------------------------------------------------------------------
# Child processes


class _CloseHeader:
    """Transport shim: adds ``Connection: close`` to the head of the response it writes."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._head_sent = False

    def write(self, data: bytes) -> None:
        if not self._head_sent:
            self._head_sent = True
            line_end = data.find(b"\r\n")
            if line_end >= 0:
                data = data[: line_end + 2] + b"Connection: close\r\n" + data[line_end + 2 :]
        self._transport.write(data)

    def close(self) -> None:
        self._transport.close()


def serve_upstream() -> None:
    """Child process: ``bench/_fakeserver.py``, but it answers ``Connection: close`` requests
    with ``Connection: close`` (RFC 9112 section 9.6). The proxy asks the upstream to close
    after each request; without the header the client would pool the connection the proxy is
    about to drop, and the next request on it would fail (a stale keep-alive race that would
    add unscripted faults to the run)."""
    sys.path.insert(0, str(HERE))
    import _fakeserver  # type: ignore[import-not-found]

    class Protocol(_fakeserver._Protocol):  # type: ignore[misc]
        def _respond(self, line: bytes, body: bytes, chunks: int | None, close: bool) -> None:
            transport = self._transport
            if close and transport is not None:
                self._transport = _CloseHeader(transport)
            try:
                super()._respond(line, body, chunks, close)
            finally:
                if self._transport is not None:
                    self._transport = transport

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Protocol, "127.0.0.1", 0, backlog=4096)
        print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
        async with server:
            await server.serve_forever()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


def start_upstream() -> tuple[subprocess.Popen[str], int]:
    return spawn_port_process([sys.executable, str(Path(__file__)), "--upstream"])


class ProxyProcess:
    def __init__(self, upstream_port: int, seed: int, rate: float) -> None:
        cmd = [sys.executable, str(Path(__file__)), "--proxies", str(upstream_port)]
        cmd += ["--seed", str(seed), "--fault-rate", str(rate)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("PORTS "):
            self.proc.kill()
            raise RuntimeError(f"proxies did not start: {line!r}")
        self.ports = [int(p) for p in line.split()[1:]]

    def stats(self) -> list[dict[str, Any]]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        result: list[dict[str, Any]] = json.loads(self.proc.stdout.readline())
        return result

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# ---------------------------------------------------------------------------------------------
# Measurement helpers


def open_sockets() -> int:
    """Sockets this process holds (entries of /proc/self/fd that are sockets)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                count += 1
    return count


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux ``/proc``)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def other_tasks() -> int:
    current = asyncio.current_task()
    return sum(1 for t in asyncio.all_tasks() if t is not current)


async def settle() -> None:
    """Let closed transports run their ``connection_lost`` callbacks."""
    await asyncio.sleep(0.25)
    gc.collect()
    await asyncio.sleep(0)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile (0-1) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def ms(seconds: float) -> str:
    return "n/a" if seconds != seconds else f"{seconds * 1000:.1f} ms"


# ---------------------------------------------------------------------------------------------
# The fault run


def classify(exc: BaseException, elapsed: float, finished: bool) -> tuple[str, bool]:
    """(label, expected): is this a failure the spec allows (deadline / retries exhausted)?"""
    import llmrouter

    name = type(exc).__name__
    if isinstance(exc, llmrouter.AllBackendsFailedError):
        if any(a.backend == "(deadline)" for a in exc.attempts) or elapsed >= TIMEOUT * 0.98:
            return f"{name} (deadline spent)", True
        return f"{name} (backends and retries exhausted)", True
    if isinstance(exc, llmrouter.StreamInterruptedError) and finished:
        # The answer was complete; the same cut on an EOF-delimited body is a success.
        return f"{name} (unexpected: after the whole answer and finish_reason)", False
    if isinstance(exc, llmrouter.StreamInterruptedError):
        return f"{name} (after content; never retried by design)", True
    if isinstance(exc, llmrouter.BackendTimeoutError) and "deadline" in str(exc):
        return f"{name} (deadline spent)", True
    if isinstance(exc, llmrouter.LLMRouterError):
        return f"{name} (unexpected: {exc})"[:160], False
    return f"UNTYPED {type(exc).__module__}.{name}: {exc}"[:160], False


async def one_request(
    client: Any, stream: bool, seen: dict[str, Any] | None = None
) -> tuple[Any, str]:
    """One request (a stream is read to its end); ``seen`` notes a stream's finish_reason."""
    if stream:
        s = await client.chat.completions.create(
            messages=MESSAGES, max_tokens=CHUNKS, stream=True, timeout=TIMEOUT
        )
        async with s:
            async for chunk in s:
                if seen is not None and chunk.choices and chunk.choices[0].finish_reason:
                    seen["finish_reason"] = chunk.choices[0].finish_reason
        return s.route, s.text
    resp = await client.chat.completions.create(
        messages=MESSAGES, max_tokens=CHUNKS, timeout=TIMEOUT
    )
    return resp.route, resp.choices[0].message.content or ""


async def warm_up(upstream_port: int) -> None:
    """Import and initialise what the first request would (aiohttp, the codec, pydantic
    validators) with a throw-away client, so the run does not time the imports."""
    import llmrouter

    async with llmrouter.AsyncClient(f"http://127.0.0.1:{upstream_port}/v1?model={MODEL}") as c:
        for stream in (False, True):
            await one_request(c, stream)
    await settle()


async def fault_run(
    ports: list[int], n: int, concurrency: int, seed: int, pids: dict[str, int]
) -> dict[str, Any]:
    import llmrouter

    events: Counter[str] = Counter()
    letters: dict[str, str] = {}  # backend display name -> A, B, C
    attempts_per_backend: Counter[str] = Counter()
    breaker_changes: list[str] = []
    budget_refusals = 0

    def on_event(event: Any) -> None:
        nonlocal budget_refusals
        events[event.kind] += 1
        if event.kind == "attempt_start":
            attempts_per_backend[event.backend] += 1
        elif event.kind == "breaker":
            breaker_changes.append(f"{letters.get(event.backend, event.backend)} {event.detail}")
        elif event.kind == "give_up" and event.detail == "retry budget exhausted":
            budget_refusals += 1

    query = f"?model={MODEL}&ttft_timeout={TTFT_TIMEOUT}&read_timeout={READ_TIMEOUT}"
    urls = [f"http://127.0.0.1:{port}/v1{query}" for port in ports]
    sockets_before = open_sockets()
    tasks_before = other_tasks()

    client = llmrouter.AsyncClient(" | ".join(urls), timeout=TIMEOUT, on_event=on_event)
    budget = client._router.budget
    names = [m.name for m in client._router.members]
    letters.update(zip(names, "ABC", strict=False))
    rng = random.Random(seed)
    streams = [rng.random() < 0.5 for _ in range(n)]
    records: list[dict[str, Any]] = []
    next_index = 0
    peak_use = 0.0

    async def monitor() -> None:
        nonlocal peak_use
        while True:
            stats = budget.stats()
            allowed = stats["retries"] + stats["available"]
            peak_use = max(peak_use, stats["retries"] / allowed if allowed > 0 else 1.0)
            await asyncio.sleep(0.05)

    async def worker() -> None:
        nonlocal next_index
        while next_index < n:
            i = next_index
            next_index += 1
            started = time.perf_counter()
            record: dict[str, Any] = {"stream": streams[i]}
            seen: dict[str, Any] = {}
            try:
                route, text = await asyncio.wait_for(
                    one_request(client, streams[i], seen), TIMEOUT * OUTER_FACTOR
                )
            except Exception as exc:
                elapsed = time.perf_counter() - started
                if isinstance(exc, TimeoutError) and elapsed >= TIMEOUT * OUTER_FACTOR * 0.99:
                    record.update(outcome="hung", latency=elapsed)
                    records.append(record)
                    continue
                label, expected = classify(exc, elapsed, "finish_reason" in seen)
                attempts = getattr(exc, "attempts", None)
                record["detail"] = (
                    [a.describe() for a in attempts] if attempts else [f"{exc!r}"[:300]]
                )
                record.update(
                    outcome="failed" if isinstance(exc, llmrouter.LLMRouterError) else "untyped",
                    error=label,
                    expected=expected,
                )
            else:
                expected_text = STREAM_TEXT if streams[i] else JSON_TEXT
                first = route.attempts[0].error if len(route.attempts) > 1 else None
                record["errors"] = [
                    f"{type(a.error).__name__}: {getattr(a.error, 'message', a.error)}"[:90]
                    for a in route.attempts
                    if a.error is not None and not a.skipped
                ]
                record.update(
                    outcome="ok",
                    intact=text == expected_text,
                    n_attempts=len(route.attempts),
                    first_error=type(first).__name__ if first is not None else None,
                )
            record["latency"] = time.perf_counter() - started
            records.append(record)

    mon = asyncio.create_task(monitor())
    cpu_start = {name: cpu_seconds(pid) for name, pid in pids.items()}
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    mon.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await mon
    budget_end = budget.stats()
    cpu_used = {name: cpu_seconds(pids[name]) - v for name, v in cpu_start.items()}
    breaker_states = {letters[m.name]: m.breaker.state for m in client._router.members}
    await client.aclose()
    await settle()
    leaked_tasks = other_tasks() - tasks_before
    leaked_sockets = open_sockets() - sockets_before

    ok = [r for r in records if r["outcome"] == "ok"]
    direct = [r["latency"] for r in ok if r["n_attempts"] == 1]
    failover = [r for r in ok if r["n_attempts"] > 1]
    base = statistics.median(direct) if direct else float("nan")
    by_first: dict[str, list[float]] = {}
    for r in failover:
        by_first.setdefault(r["first_error"], []).append(r["latency"] - base)
    attempt_errors = Counter(e for r in records for e in r.get("errors", []))
    return {
        "requests": n,
        "concurrency": concurrency,
        "wall_s": wall,
        "cpu_s": cpu_used,
        "streaming": sum(streams),
        "succeeded": len(ok),
        "succeeded_first_try": len(direct),
        "succeeded_after_failover": len(failover),
        "succeeded_not_intact": sum(1 for r in ok if not r["intact"]),
        "failed_typed": Counter(r["error"] for r in records if r["outcome"] == "failed"),
        "failed_unexpected": sum(
            1 for r in records if r["outcome"] == "failed" and not r["expected"]
        ),
        "untyped": Counter(r["error"] for r in records if r["outcome"] == "untyped"),
        "hung": sum(1 for r in records if r["outcome"] == "hung"),
        "recorded": len(records),
        "latency_p50_first_try_s": base,
        "latency_p99_first_try_s": pct(direct, 0.99),
        "failover_added_p50_s": pct([r["latency"] for r in failover], 0.5) - base,
        "failover_added_p99_s": pct([r["latency"] for r in failover], 0.99) - base,
        "failover_added_by_first_error": {
            k: {"count": len(v), "p50_s": pct(v, 0.5), "p99_s": pct(v, 0.99)}
            for k, v in sorted(by_first.items(), key=lambda kv: -len(kv[1]))
        },
        "attempts_per_backend": {letters[b]: attempts_per_backend[b] for b in names},
        "attempts_total": sum(attempts_per_backend.values()),
        "events": dict(events),
        "attempt_errors_of_successes": dict(attempt_errors.most_common()),
        "failures": [
            {"error": r["error"], "stream": r["stream"], "attempts": r["detail"]}
            for r in records
            if r["outcome"] in ("failed", "untyped")
        ][:100],
        "retries": events["retry"],
        "budget_refusals": budget_refusals,
        "budget_peak_use": peak_use,
        "budget_stats_end": budget_end,
        "breaker_changes": breaker_changes,
        "breaker_states_end": breaker_states,
        "leaked_tasks": leaked_tasks,
        "leaked_sockets": leaked_sockets,
    }


# ---------------------------------------------------------------------------------------------
# Micro-measurements


async def interleaved(
    calls: list[Callable[[], Any]], samples: int, warmup: int = 20
) -> list[list[float]]:
    """Per-request wall times of each call, taken in rotating order."""
    times: list[list[float]] = [[] for _ in calls]
    for i in range(warmup + samples):
        for k in range(len(calls)):
            j = (i + k) % len(calls)
            t0 = time.perf_counter()
            await calls[j]()
            if i >= warmup:
                times[j].append(time.perf_counter() - t0)
    return times


async def micro(fake_port: int, refused_samples: int, skip_samples: int) -> dict[str, Any]:
    import llmrouter
    from llmrouter.policy import CircuitBreaker

    sockets_before = open_sockets()
    tasks_before = other_tasks()
    fake = f"http://127.0.0.1:{fake_port}/v1?model={MODEL}"
    dead = f"http://127.0.0.1:{closed_port()}/v1?model={MODEL}"
    direct = llmrouter.AsyncClient(fake)
    refused = llmrouter.AsyncClient(
        f"{dead}, {fake}",
        circuit_breaker=lambda: CircuitBreaker(failure_threshold=10**9, min_calls=10**9),
    )
    skipping = llmrouter.AsyncClient(
        f"{dead}, {fake}",
        circuit_breaker=lambda: CircuitBreaker(failure_threshold=1, cooldown=3600),
    )
    checks: list[str] = []
    try:

        def call(client: Any) -> Callable[[], Any]:
            async def run() -> Any:
                resp = await client.chat.completions.create(messages=MESSAGES, max_tokens=CHUNKS)
                return resp

            return run

        first = await call(skipping)()  # opens the dead backend's breaker
        second = await call(skipping)()
        if not (
            len(first.route.attempts) == 2
            and first.route.attempts[0].error is not None
            and second.route.attempts[0].skipped
        ):
            checks.append(
                "breaker did not skip: "
                + "; ".join(a.describe() for a in first.route.attempts + second.route.attempts)
            )
        probe = await call(refused)()
        if len(probe.route.attempts) != 2 or probe.route.attempts[0].skipped:
            checks.append("refused backend not tried first: " + str(probe.route.attempts))

        d1, r1 = await interleaved([call(direct), call(refused)], refused_samples)
        d2, s2 = await interleaved([call(direct), call(skipping)], skip_samples)
        if skipping._router.members[0].breaker.state != "open":
            checks.append("breaker closed during the measurement")
    finally:
        for client in (direct, refused, skipping):
            await client.aclose()
    await settle()
    return {
        "refused_direct_p50_s": statistics.median(d1),
        "refused_failover_p50_s": statistics.median(r1),
        "refused_added_s": statistics.median(r1) - statistics.median(d1),
        "refused_samples": refused_samples,
        "skip_direct_p50_s": statistics.median(d2),
        "skip_p50_s": statistics.median(s2),
        "skip_added_s": statistics.median(s2) - statistics.median(d2),
        "skip_samples": skip_samples,
        "checks": checks,
        "leaked_tasks": other_tasks() - tasks_before,
        "leaked_sockets": open_sockets() - sockets_before,
    }


# ---------------------------------------------------------------------------------------------
# Report


def verdict(ok: bool) -> str:
    return "pass" if ok else "**FAIL**"


def report(run: dict[str, Any], mic: dict[str, Any], proxies: list[dict[str, Any]]) -> str:
    rows: list[tuple[str, str, str, str]] = []
    n = run["requests"]
    rows.append(
        (
            "requests (streaming) / concurrency / wall time",
            f"{n} ({run['streaming']}) / {run['concurrency']} / {run['wall_s']:.1f} s",
            "",
            "",
        )
    )
    cpu = run["cpu_s"]
    rows.append(
        (
            "throughput; CPU s client / proxies / upstream",
            f"{n / run['wall_s']:.0f} req/s; {cpu['client']:.1f} / {cpu['proxies']:.1f} / "
            f"{cpu['upstream']:.1f} (of {2 * run['wall_s']:.1f} on 2 cores)",
            "",
            "",
        )
    )
    conns = [p["connections"] for p in proxies]
    faulted = sum(sum(v for k, v in p["faults"].items() if k != "pass") for p in proxies)
    rows.append(
        (
            "connections faulted",
            f"{faulted} / {sum(conns)} ({faulted / max(sum(conns), 1):.1%})",
            "~30 %",
            "",
        )
    )
    rows.append(
        (
            "succeeded (first try / after failover)",
            f"{run['succeeded']} ({run['succeeded_first_try']} / "
            f"{run['succeeded_after_failover']})",
            "",
            "",
        )
    )
    failed = sum(run["failed_typed"].values())
    rows.append(
        (
            "failed with a typed llmrouter error",
            f"{failed}" + "".join(f"<br>{v} x {k}" for k, v in sorted(run["failed_typed"].items())),
            "only deadline / retries exhausted",
            verdict(run["failed_unexpected"] == 0),
        )
    )
    untyped = sum(run["untyped"].values())
    rows.append(
        (
            "failed with an untyped exception",
            f"{untyped}" + "".join(f"<br>{v} x {k}" for k, v in run["untyped"].items()),
            "0",
            verdict(untyped == 0),
        )
    )
    lost = n - run["recorded"] + run["hung"]
    rows.append(
        (
            f"lost or hung (outer bound {TIMEOUT * OUTER_FACTOR:.0f} s)",
            str(lost),
            "0",
            verdict(lost == 0),
        )
    )
    rows.append(
        (
            "successes with wrong / truncated content",
            str(run["succeeded_not_intact"]),
            "0",
            verdict(run["succeeded_not_intact"] == 0),
        )
    )
    per_backend = " / ".join(str(c) for c in conns)
    attempts = " / ".join(str(v) for v in run["attempts_per_backend"].values())
    rows.append(
        (
            "calls per backend A / B / C (proxy connections)",
            f"{per_backend} (total {sum(conns)}; {sum(conns) / n:.2f} per request)",
            "",
            "",
        )
    )
    rows.append(
        (
            "attempts per backend A / B / C (client attempt_start events)",
            attempts,
            "= connections",
            verdict(list(run["attempts_per_backend"].values()) == conns),
        )
    )
    b = run["budget_stats_end"]
    rows.append(
        (
            "retry budget: retries / refusals / peak share of budget spent",
            f"{run['retries']} / {run['budget_refusals']} / {run['budget_peak_use']:.0%}",
            "",
            "",
        )
    )
    rows.append(
        (
            "retry budget stats() at end (last 10 s)",
            f"requests {b['requests']:.0f}, retries {b['retries']:.0f}, "
            f"available {b['available']:.0f}",
            "",
            "",
        )
    )
    changes = Counter(run["breaker_changes"])
    rows.append(
        (
            "breaker transitions",
            ", ".join(f"{v} x {k}" for k, v in sorted(changes.items())) or "none",
            "",
            "",
        )
    )
    rows.append(
        (
            "latency p50 / p99, served at first try",
            f"{ms(run['latency_p50_first_try_s'])} / {ms(run['latency_p99_first_try_s'])}",
            "",
            "",
        )
    )
    rows.append(
        (
            "latency added by failover, p50 / p99",
            f"{ms(run['failover_added_p50_s'])} / {ms(run['failover_added_p99_s'])}",
            "",
            "",
        )
    )
    rows.append(
        (
            "leaked tasks / sockets after the fault run",
            f"{run['leaked_tasks']} / {run['leaked_sockets']}",
            "0 / 0",
            verdict(run["leaked_tasks"] == 0 and run["leaked_sockets"] == 0),
        )
    )
    rows.append(
        (
            f"failover from a refused backend, added (median of {mic['refused_samples']})",
            f"{mic['refused_added_s'] * 1000:.3f} ms "
            f"({ms(mic['refused_failover_p50_s'])} vs {ms(mic['refused_direct_p50_s'])})",
            "< 5 ms",
            verdict(mic["refused_added_s"] < 0.005),
        )
    )
    rows.append(
        (
            f"skipping an open breaker, added (median of {mic['skip_samples']})",
            f"{mic['skip_added_s'] * 1000:.3f} ms "
            f"({mic['skip_p50_s'] * 1000:.3f} vs {mic['skip_direct_p50_s'] * 1000:.3f} ms)",
            "< 0.1 ms",
            verdict(mic["skip_added_s"] < 0.0001 and not mic["checks"]),
        )
    )
    rows.append(
        (
            "leaked tasks / sockets after the micro-measurements",
            f"{mic['leaked_tasks']} / {mic['leaked_sockets']}",
            "0 / 0",
            verdict(mic["leaked_tasks"] == 0 and mic["leaked_sockets"] == 0),
        )
    )
    lines = ["| measure | value | target | result |", "| --- | --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]

    lines += ["", "| failover by first error | requests | added p50 | added p99 |"]
    lines += ["| --- | --- | --- | --- |"]
    for kind, v in run["failover_added_by_first_error"].items():
        lines.append(f"| {kind} | {v['count']} | {ms(v['p50_s'])} | {ms(v['p99_s'])} |")

    drawn: Counter[str] = Counter()
    for p in proxies:
        drawn.update(p["faults"])
    lines += ["", "| fault drawn | connections |", "| --- | --- |"]
    for kind, count in sorted(drawn.items(), key=lambda kv: (kv[0] != "pass", -kv[1])):
        lines.append(f"| {kind} | {count} |")
    if mic["checks"]:
        lines += ["", "Micro-measurement checks failed:", *(f"- {c}" for c in mic["checks"])]
    return "\n".join(lines)


async def amain(args: argparse.Namespace, sizes: dict[str, int]) -> dict[str, Any]:
    upstream, port = start_upstream()
    proxies = ProxyProcess(port, args.seed, args.fault_rate)
    try:
        pids = {"client": os.getpid(), "proxies": proxies.proc.pid, "upstream": upstream.pid}
        run = await fault_run(proxies.ports, sizes["requests"], args.concurrency, args.seed, pids)
        proxy_stats = proxies.stats()
        mic = await micro(port, sizes["refused_samples"], sizes["skip_samples"])
    finally:
        proxies.close()
        upstream.terminate()
        upstream.wait(10)
    return {"fault_run": run, "micro": mic, "proxies": proxy_stats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300 requests, fewer samples")
    parser.add_argument("--json", metavar="PATH", help="also write every figure as JSON")
    parser.add_argument("--requests", type=int, help="requests in the fault run")
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--fault-rate", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--proxies", type=int, metavar="UPSTREAM_PORT", help=argparse.SUPPRESS)
    parser.add_argument("--upstream", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.upstream:
        serve_upstream()
        return
    if args.proxies is not None:
        serve_proxies(args.proxies, args.seed, args.fault_rate)
        return
    sizes = dict(QUICK if args.quick else FULL)
    if args.requests:
        sizes["requests"] = args.requests
    result = asyncio.run(amain(args, sizes))
    print(report(result["fault_run"], result["micro"], result["proxies"]))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()

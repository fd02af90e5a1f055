"""What llmrouter costs on top of the HTTP client it drives, against raw clients and the openai SDK.

Usage::

    python bench/overhead.py [--quick] [--json out.json]
    python bench/overhead.py --otel [--quick]     # telemetry off / on, side by side

Method
------
* A fake OpenAI-compatible server (``bench/_fakeserver.py``, raw asyncio, cached responses)
  runs in its own process pinned to CPU 1; every client runs pinned to CPU 0
  (``os.sched_setaffinity`` where the platform has it and two CPUs are allowed). The server's
  CPU use is read from ``/proc`` during each measurement; if it nears 100 % the throughput rows
  measure the server, not the client, and the script says so.
* One long-lived worker process per library (raw ``httpx2``, raw ``aiohttp``, the ``openai``
  SDK, ``llmrouter``) holds its clients and connection pools; the parent drives the workers in
  turn over a pipe, so the libraries never share a process but their measurements interleave
  (``rounds`` rounds; latency phases also take turns in five slices within a round), which
  spreads noise from other work on the machine over all of them. A value is the median over
  rounds; a comparison ("vs baseline") is the median of per-round pairs. Every phase warms up
  first. Each worker reports the share of the CPU it got, so a run disturbed by other work
  says so.
* Raw baselines do what a careful hand-written client does: ``httpx2.Client.post(json=...)``
  + ``json.loads`` of the body; streams iterate lines, keep ``data: `` lines and ``json.loads``
  each payload (to the end of the body). ``aiohttp`` gets ``TCPConnector(limit=0)`` and httpx2
  ``max_connections=1000`` (the same pool limits llmrouter uses); the openai SDK is used with
  its defaults (``max_retries=0``).

Measurements
------------
(a) import time: a fresh interpreter per sample, ``time.perf_counter`` around the import
    statements (interpreter start-up excluded), one untimed run first so bytecode caches are
    warm, median of 5 (3 with ``--quick``). Also, for information, "cold first request":
    import + construct a client + one request, in a fresh process.
(b) sequential per-request time, sync and async: median of per-request wall times.
(c) requests/s at concurrency 200 (async): 200 tasks loop on requests; completions counted in
    a fixed window after a warm-up window, then the tasks are cancelled.
(d) per-chunk time of a 200-chunk stream (sync): (request to end of stream) / 200, median.
(e) chunks/s with 100 concurrent 200-chunk streams (async), each chunk counted as it arrives,
    in a fixed window.
(f) peak RSS (``resource.getrusage(...).ru_maxrss``) of a fresh process per client after
    holding 500 streams open at once (each has yielded a chunk before any is drained), then
    draining them. Sync clients hold them with an ``ExitStack`` in one thread; async clients
    with 500 tasks and a barrier.
(g) ``--registry RUNS``: the backend registry's cost, fresh processes: ``import llmrouter``,
    resolving a built-in scheme and a plugin scheme (entry-point metadata read once), and
    Client + first request, each beside a baseline doing the same work by importing the
    modules directly.

Targets (llmrouter against the baseline measured in the same run):
import <= 0.3x openai; sync per-request <= raw httpx2 + 150 us; async req/s and concurrent
chunks/s >= 0.8x raw aiohttp; per-chunk time <= 1.5x raw httpx2; peak RSS <= 1.2x the raw
client's (httpx2 for sync, aiohttp for async).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _fakeserver import spawn_port_process  # bench/ is on sys.path when run as a script

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MODEL = "m"
MESSAGES = [{"role": "user", "content": "Say hello."}]
RESULT = "@@RESULT "
CLIENT_CPU = 0
SERVER_CPU = 1

FULL = {
    "import_runs": 5,
    "cold_runs": 5,
    "rounds": 5,
    # The openai SDK parses chunks ~10x slower than the rest and, in (e), holds the event
    # loop for a whole buffered stream at a time: it runs fewer rounds to keep the run short.
    "openai_rounds": 2,
    "slices": 5,
    "seq_n": 200,
    "seq_warmup": 50,
    "concurrency": 200,
    "window_s": 0.6,
    "warmup_s": 0.2,
    "stream_chunks": 200,
    "stream_n": 15,
    "stream_warmup": 3,
    "streams_concurrency": 100,
    "streams_window_s": 0.8,
    "rss_streams": 500,
    "rss_chunks": 50,
    # Which libraries run phases (b)-(e), and which (library, mode) pairs get an RSS process.
    "libs": ["httpx2", "aiohttp", "openai", "llmrouter"],
    "rss": [
        ["httpx2", "sync"],
        ["openai", "sync"],
        ["llmrouter", "sync"],
        ["httpx2", "async"],
        ["aiohttp", "async"],
        ["openai", "async"],
        ["llmrouter", "async"],
    ],
}
# --quick: one round, fewer samples, the cold start sampled once, shorter streams in the RSS
# test (so its ratios differ a little from a full run's), and the openai SDK (several times
# slower per chunk than the rest) only in the import rows: what the targets compare remains.
QUICK = {
    **FULL,
    "import_runs": 3,
    "cold_runs": 1,
    "rounds": 1,
    "openai_rounds": 1,
    "seq_n": 300,
    "rss_chunks": 20,
    "libs": ["httpx2", "aiohttp", "llmrouter"],
    "rss": [
        ["httpx2", "sync"],
        ["llmrouter", "sync"],
        ["aiohttp", "async"],
        ["llmrouter", "async"],
    ],
}

# ---------------------------------------------------------------------------------------------
# Client adapters (run inside worker processes; each imports its library lazily)


def _sse_text(lines: Any) -> Any:
    for line in lines:
        if line.startswith("data: "):
            data = line[6:]
            if data != "[DONE]":
                yield json.loads(data)


async def _asse_text(lines: Any) -> Any:
    async for line in lines:
        if line.startswith("data: "):
            data = line[6:]
            if data != "[DONE]":
                yield json.loads(data)


async def _asse_bytes(content: Any) -> Any:
    async for line in content:  # aiohttp's StreamReader yields lines
        if line.startswith(b"data: "):
            data = line[6:].rstrip()
            if data != b"[DONE]":
                yield json.loads(data)


def _body(stream: bool, n: int = 16) -> dict[str, Any]:
    body: dict[str, Any] = {"model": MODEL, "messages": MESSAGES, "max_tokens": n}
    if stream:
        body["stream"] = True
    return body


class Httpx2Sync:
    def __init__(self, base: str) -> None:
        import httpx2

        limits = httpx2.Limits(max_connections=1000, max_keepalive_connections=1000)
        self.client = httpx2.Client(base_url=base, timeout=60, limits=limits)

    def request(self) -> None:
        r = self.client.post("/chat/completions", json=_body(False))
        r.raise_for_status()
        assert json.loads(r.content)["choices"][0]["message"]["content"]

    def open_stream(self, stack: contextlib.ExitStack, n: int) -> Any:
        r = stack.enter_context(
            self.client.stream("POST", "/chat/completions", json=_body(True, n))
        )
        r.raise_for_status()
        return _sse_text(r.iter_lines())

    def close(self) -> None:
        self.client.close()


class OpenAISync:
    def __init__(self, base: str) -> None:
        from openai import OpenAI

        self.client = OpenAI(base_url=base, api_key="bench", max_retries=0, timeout=60)

    def request(self) -> None:
        r = self.client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=16)
        assert r.choices[0].message.content

    def open_stream(self, stack: contextlib.ExitStack, n: int) -> Any:
        s = self.client.chat.completions.create(
            model=MODEL, messages=MESSAGES, max_tokens=n, stream=True
        )
        return iter(stack.enter_context(s))

    def close(self) -> None:
        self.client.close()


class RouterSync:
    def __init__(self, base: str) -> None:
        from llmrouter import Client

        self.client = Client(f"{base}?model={MODEL}")

    def request(self) -> None:
        r = self.client.chat.completions.create(messages=MESSAGES, max_tokens=16)
        assert r.choices[0].message.content

    def open_stream(self, stack: contextlib.ExitStack, n: int) -> Any:
        s = self.client.chat.completions.create(messages=MESSAGES, max_tokens=n, stream=True)
        return iter(stack.enter_context(s))

    def close(self) -> None:
        self.client.close()


class Httpx2Async:
    def __init__(self, base: str) -> None:
        import httpx2

        limits = httpx2.Limits(max_connections=1000, max_keepalive_connections=1000)
        self.client = httpx2.AsyncClient(base_url=base, timeout=60, limits=limits)

    async def request(self) -> None:
        r = await self.client.post("/chat/completions", json=_body(False))
        r.raise_for_status()
        assert json.loads(r.content)["choices"][0]["message"]["content"]

    async def open_stream(self, stack: contextlib.AsyncExitStack, n: int) -> Any:
        ctx = self.client.stream("POST", "/chat/completions", json=_body(True, n))
        r = await stack.enter_async_context(ctx)
        r.raise_for_status()
        return _asse_text(r.aiter_lines())

    async def aclose(self) -> None:
        await self.client.aclose()


class AiohttpAsync:
    def __init__(self, base: str) -> None:
        import aiohttp

        self.base = base
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def request(self) -> None:
        async with self.session.post(self.base + "/chat/completions", json=_body(False)) as r:
            r.raise_for_status()
            assert json.loads(await r.read())["choices"][0]["message"]["content"]

    async def open_stream(self, stack: contextlib.AsyncExitStack, n: int) -> Any:
        ctx = self.session.post(self.base + "/chat/completions", json=_body(True, n))
        r = await stack.enter_async_context(ctx)
        r.raise_for_status()
        return _asse_bytes(r.content)

    async def aclose(self) -> None:
        await self.session.close()


class OpenAIAsync:
    def __init__(self, base: str) -> None:
        from openai import AsyncOpenAI

        self.client = AsyncOpenAI(base_url=base, api_key="bench", max_retries=0, timeout=60)

    async def request(self) -> None:
        r = await self.client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=16)
        assert r.choices[0].message.content

    async def open_stream(self, stack: contextlib.AsyncExitStack, n: int) -> Any:
        s = await self.client.chat.completions.create(
            model=MODEL, messages=MESSAGES, max_tokens=n, stream=True
        )
        return await stack.enter_async_context(s)

    async def aclose(self) -> None:
        await self.client.close()


class RouterAsync:
    def __init__(self, base: str) -> None:
        from llmrouter import AsyncClient

        self.client = AsyncClient(f"{base}?model={MODEL}")

    async def request(self) -> None:
        r = await self.client.chat.completions.create(messages=MESSAGES, max_tokens=16)
        assert r.choices[0].message.content

    async def open_stream(self, stack: contextlib.AsyncExitStack, n: int) -> Any:
        s = await self.client.chat.completions.create(messages=MESSAGES, max_tokens=n, stream=True)
        return await stack.enter_async_context(s)

    async def aclose(self) -> None:
        await self.client.aclose()


def otel_telemetry(sdk: bool) -> Any:
    """``--otel``: telemetry into the OpenTelemetry SDK as a service runs it (spans batched to an
    exporter that drops them, metrics aggregated in memory); ``sdk=False``: the API alone (no
    provider set: no-op spans), which is llmrouter's own share of the cost."""
    from llmrouter.otel import Telemetry

    if not sdk:
        return Telemetry()
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Dropped(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(Dropped()))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    return Telemetry(tracer_provider=tracer_provider, meter_provider=meter_provider)


class RouterOtelSync(RouterSync):
    SDK = True

    def __init__(self, base: str) -> None:
        from llmrouter import Client

        self.client = Client(f"{base}?model={MODEL}", telemetry=otel_telemetry(self.SDK))


class RouterOtelApiSync(RouterOtelSync):
    SDK = False


class RouterOtelAsync(RouterAsync):
    SDK = True

    def __init__(self, base: str) -> None:
        from llmrouter import AsyncClient

        self.client = AsyncClient(f"{base}?model={MODEL}", telemetry=otel_telemetry(self.SDK))


class RouterOtelApiAsync(RouterOtelAsync):
    SDK = False


# library -> (sync adapter, async adapter); the columns of the report, in order.
LIBS: dict[str, tuple[type | None, type | None]] = {
    "httpx2": (Httpx2Sync, Httpx2Async),
    "aiohttp": (None, AiohttpAsync),
    "openai": (OpenAISync, OpenAIAsync),
    "llmrouter": (RouterSync, RouterAsync),
    # --otel only (bench/otel_overhead.py): telemetry on, into the SDK / the API alone.
    "llmrouter+otel": (RouterOtelSync, RouterOtelAsync),
    "llmrouter+otel-api": (RouterOtelApiSync, RouterOtelApiAsync),
}

# ---------------------------------------------------------------------------------------------
# Phases (inside a worker)


def _drain_sync(adapter: Any, n: int) -> int:
    count = 0
    with contextlib.ExitStack() as stack:
        for _ in adapter.open_stream(stack, n):
            count += 1
    if count != n:
        raise AssertionError(f"expected {n} chunks, got {count}")
    return count


class Counter:
    """Units of work done, shared by the tasks of one measurement."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0


async def _drain_async(adapter: Any, n: int, counter: Counter | None = None) -> int:
    counter = counter or Counter()
    count = 0
    async with contextlib.AsyncExitStack() as stack:
        async for _ in await adapter.open_stream(stack, n):
            count += 1
            counter.n += 1  # per chunk, so a window boundary can fall mid-stream
    if count != n:
        raise AssertionError(f"expected {n} chunks, got {count}")
    return count


def seq_sync(adapter: Any, n: int, warmup: int) -> dict[str, float]:
    for _ in range(warmup):
        adapter.request()
    clock = time.perf_counter_ns
    samples = []
    for _ in range(n):
        t0 = clock()
        adapter.request()
        samples.append((clock() - t0) / 1000)
    return {"us": statistics.median(samples), "samples": samples}


async def seq_async(adapter: Any, n: int, warmup: int) -> dict[str, float]:
    for _ in range(warmup):
        await adapter.request()
    clock = time.perf_counter_ns
    samples = []
    for _ in range(n):
        t0 = clock()
        await adapter.request()
        samples.append((clock() - t0) / 1000)
    return {"us": statistics.median(samples), "samples": samples}


async def _windowed(
    work: Callable[[Counter], Any], concurrency: int, warmup_s: float, window_s: float
) -> float:
    """Run ``concurrency`` loops of ``work`` (which counts what it does); units/s in the window.

    The window is measured from when this task actually wakes up, so a client that holds the
    event loop for long stretches overshoots the window but is still counted correctly.
    """
    counter = Counter()

    async def loop() -> None:
        while True:
            await work(counter)

    tasks = [asyncio.ensure_future(loop()) for _ in range(concurrency)]
    await asyncio.sleep(warmup_s)
    start_done, start = counter.n, time.perf_counter()
    await asyncio.sleep(window_s)
    end_done, end = counter.n, time.perf_counter()
    # Cancel rather than wait for in-flight work to finish: a slow client would otherwise
    # spend seconds draining; every client closes a cancelled stream's connection.
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return (end_done - start_done) / (end - start)


async def conc_async(
    adapter: Any, concurrency: int, warmup_s: float, window_s: float
) -> dict[str, float]:
    async def one(counter: Counter) -> None:
        await adapter.request()
        counter.n += 1

    return {"rps": await _windowed(one, concurrency, warmup_s, window_s)}


def stream_sync(adapter: Any, chunks: int, n: int, warmup: int) -> dict[str, float]:
    for _ in range(warmup):
        _drain_sync(adapter, chunks)
    samples = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        _drain_sync(adapter, chunks)
        samples.append((time.perf_counter_ns() - t0) / chunks / 1000)
    return {"us": statistics.median(samples), "samples": samples}


async def streams_async(
    adapter: Any, concurrency: int, chunks: int, warmup_s: float, window_s: float
) -> dict[str, float]:
    async def one(counter: Counter) -> None:
        await _drain_async(adapter, chunks, counter)

    return {"chunks_per_s": await _windowed(one, concurrency, warmup_s, window_s)}


def _pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and cpu in os.sched_getaffinity(0):
        os.sched_setaffinity(0, {cpu})


def worker_main(lib: str, base: str, cpu: int | None) -> None:
    """A worker: build the library's clients, then run phases asked for on stdin."""
    if cpu is not None:
        _pin(cpu)
    sync_cls, async_cls = LIBS[lib]
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    sync = sync_cls(base) if sync_cls else None

    async def make_async() -> Any:
        return async_cls(base) if async_cls else None

    aio = loop.run_until_complete(make_async())
    print(RESULT + json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        phase, params = cmd["phase"], cmd["params"]
        gc.collect()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        if phase == "seq_sync":
            result = seq_sync(sync, **params)
        elif phase == "stream_sync":
            result = stream_sync(sync, **params)
        else:
            fn = {"seq_async": seq_async, "conc_async": conc_async, "streams_async": streams_async}
            result = loop.run_until_complete(fn[phase](aio, **params))
        # The share of wall time this process got the CPU: well under 1 in a throughput phase
        # means something else ran on the client's CPU.
        result["cpu_share"] = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
        print(RESULT + json.dumps(result), flush=True)
    if sync is not None:
        sync.close()
    if aio is not None:
        loop.run_until_complete(aio.aclose())
    loop.close()


def rss_main(lib: str, mode: str, base: str, cpu: int | None, streams: int, chunks: int) -> None:
    """Peak RSS of a fresh process that holds ``streams`` streams open at once."""
    if cpu is not None:
        _pin(cpu)
    sync_cls, async_cls = LIBS[lib]

    def maxrss_kib() -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux

    if mode == "sync":
        adapter = sync_cls(base)  # type: ignore[misc]
        adapter.request()
        _drain_sync(adapter, chunks)
        base_kib = maxrss_kib()
        with contextlib.ExitStack() as stack:
            iterators = []
            for _ in range(streams):
                it = adapter.open_stream(stack, chunks)
                next(it)
                iterators.append(it)
            for it in iterators:
                if sum(1 for _ in it) != chunks - 1:
                    raise AssertionError("short stream")
        adapter.close()
    else:

        async def run() -> int:
            adapter = async_cls(base)  # type: ignore[misc]
            await adapter.request()
            await _drain_async(adapter, chunks)
            base_kib = maxrss_kib()
            opened = 0
            all_open = asyncio.Event()

            async def one() -> None:
                nonlocal opened
                async with contextlib.AsyncExitStack() as stack:
                    it = (await adapter.open_stream(stack, chunks)).__aiter__()
                    await it.__anext__()
                    opened += 1
                    if opened == streams:
                        all_open.set()
                    await all_open.wait()
                    count = 1
                    async for _ in it:
                        count += 1
                if count != chunks:
                    raise AssertionError("short stream")

            await asyncio.gather(*(one() for _ in range(streams)))
            await adapter.aclose()
            return base_kib

        base_kib = asyncio.run(run())
    print(RESULT + json.dumps({"base_kib": base_kib, "peak_kib": maxrss_kib()}), flush=True)


# ---------------------------------------------------------------------------------------------
# The parent: server, workers, report


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc), or NaN elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def _read_result(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(RESULT):
            return json.loads(line[len(RESULT) :])
    raise RuntimeError(f"worker exited (rc={proc.wait()}) without a result")


class Worker:
    def __init__(self, lib: str, base: str, cpu: int | None) -> None:
        self.lib = lib
        cmd = [sys.executable, str(Path(__file__)), "--worker", lib, "--base", base]
        if cpu is not None:
            cmd += ["--cpu", str(cpu)]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=_env()
        )

    def wait_ready(self) -> None:
        _read_result(self.proc)

    def run(self, phase: str, **params: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"phase": phase, "params": params}) + "\n")
        self.proc.stdin.flush()
        return _read_result(self.proc)

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_server(cpu: int | None) -> tuple[subprocess.Popen[str], int]:
    cmd = [sys.executable, str(HERE / "_fakeserver.py"), "--port", "0"]
    if cpu is not None:
        cmd += ["--cpu", str(cpu)]
    return spawn_port_process(cmd)


IMPORTS = {
    "llmrouter": "import llmrouter\nfrom llmrouter import Client",
    "llmrouter_async": "import llmrouter\nfrom llmrouter import AsyncClient",
    "openai": "import openai\nfrom openai import OpenAI",
    "httpx2": "import httpx2",
    "aiohttp": "import aiohttp",
}

COLD = {
    "httpx2": (
        "import httpx2\n"
        "r = httpx2.post('{base}/chat/completions', json={body!r})\n"
        "assert r.json()['choices']"
    ),
    "openai": (
        "from openai import OpenAI\n"
        "c = OpenAI(base_url='{base}', api_key='x', max_retries=0)\n"
        "assert c.chat.completions.create(model='m', messages={msgs!r}, max_tokens=16).choices"
    ),
    "llmrouter": (
        "from llmrouter import Client\n"
        "c = Client('{base}?model=m')\n"
        "assert c.chat.completions.create(messages={msgs!r}, max_tokens=16).choices"
    ),
}


def _time_code(code: str) -> float:
    wrapped = (
        "import time as _t\n_s = _t.perf_counter()\n"
        + code
        + "\nimport sys as _y\n_y.stdout.write(repr(_t.perf_counter() - _s))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", wrapped], capture_output=True, text=True, env=_env(), check=True
    )
    return float(out.stdout.strip()) * 1000


def time_imports(runs: int, cold_runs: int, base: str) -> dict[str, Any]:
    codes = {f"import:{k}": v for k, v in IMPORTS.items()}
    body = _body(False)
    for lib, template in COLD.items():
        codes[f"cold:{lib}"] = template.format(base=base, body=body, msgs=MESSAGES)
    samples: dict[str, list[float]] = {k: [] for k in codes}
    for code in IMPORTS.values():  # warm the bytecode and page caches
        _time_code(code)
    for i in range(max(runs, cold_runs)):
        for key, code in codes.items():  # interleaved
            if i < (cold_runs if key.startswith("cold:") else runs):
                samples[key].append(_time_code(code))
    return {k: {"ms": statistics.median(v), "samples": v} for k, v in samples.items()}


# (g) the backend registry's cost, each in a fresh interpreter (median of ``runs``), against a
# baseline doing the same work directly (the way before the registry: modules imported by name).
REGISTRY = {
    # import llmrouter: the registry is not imported (nothing to pay before a URL is parsed);
    # its baseline is the tree before the registry (--previous).
    "import llmrouter": "import llmrouter",
    # A built-in scheme: the index names its module; no plugin metadata is read.
    "resolve http:// via the registry": (
        "import llmrouter.config\nfrom llmrouter.backends import registry\n"
        "_t0 = _t.perf_counter()\nregistry.declaration('http')"
    ),
    "resolve http:// (baseline: import its module)": (
        "import llmrouter.config, importlib\n"
        "_t0 = _t.perf_counter()\nimportlib.import_module('llmrouter.backends.openai_compat')"
    ),
    # A plugin scheme: entry-point metadata read once, then the plugin's module imported.
    "resolve a plugin scheme via entry points": (
        "import llmrouter.config\nfrom llmrouter.backends import registry\n"
        "_t0 = _t.perf_counter()\nregistry.declaration('llamacpp-native')"
    ),
    "resolve a plugin (baseline: import its module)": (
        "import llmrouter.config, importlib\n"
        "_t0 = _t.perf_counter()\nimportlib.import_module('llmrouter_llamacpp_native.backend')"
    ),
    # First request: construct a Client and send one request to the fake server.
    "Client + first request": (
        "from llmrouter import Client\nc = Client('{base}?model=m')\n"
        "assert c.chat.completions.create(messages={msgs!r}, max_tokens=16).choices"
    ),
}


def _time_since_t0(code: str, tree: str | None = None) -> float:
    """Milliseconds from ``_t0`` (or the start) to the end of ``code``, in a fresh process
    (importing llmrouter from source ``tree`` when given)."""
    wrapped = (
        "import time as _t\n_t0 = _s = _t.perf_counter()\n"
        + code
        + "\nimport sys as _y\n_y.stdout.write(repr(_t.perf_counter() - _t0))\n"
    )
    env = _env()
    if tree is not None:
        env["PYTHONPATH"] = tree
    out = subprocess.run(
        [sys.executable, "-c", wrapped],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        cwd=tree or None,
    )
    return float(out.stdout.strip()) * 1000


def time_registry(runs: int, base: str, previous: str | None = None) -> dict[str, float]:
    """The registry's cost, each row the median of ``runs`` fresh processes (interleaved).
    ``previous``: a source tree of llmrouter before the registry (``git archive 9c33ef4~1``),
    timed for ``import llmrouter`` and the first request as the baseline of those rows."""
    import importlib.util

    codes: dict[str, tuple[str, str | None]] = {}
    for key, template in REGISTRY.items():
        code = template.format(base=base, msgs=MESSAGES)
        if "plugin" in key and importlib.util.find_spec("llmrouter_llamacpp_native") is None:
            continue  # the example plugin is not installed
        codes[key] = (code, None)
        if previous is not None and key in ("import llmrouter", "Client + first request"):
            codes[f"{key} (baseline: llmrouter before the registry)"] = (code, previous)
    for code, tree in codes.values():  # warm the bytecode and page caches
        _time_since_t0(code, tree)
    samples: dict[str, list[float]] = {k: [] for k in codes}
    for _ in range(runs):
        for key, (code, tree) in codes.items():
            samples[key].append(_time_since_t0(code, tree))
    return {k: statistics.median(v) for k, v in samples.items()}


def registry_table(times: dict[str, float]) -> str:
    """The registry rows, each registry figure beside its baseline."""
    lines = ["| measurement | ms | vs baseline |", "| --- | --- | --- |"]
    keys = list(times)
    for i, key in enumerate(keys):
        ratio = ""
        if "baseline" not in key:
            baselines = [k for k in keys[i + 1 : i + 3] if "baseline" in k]
            ratio = ", ".join(f"{times[key] / times[b]:.2f}x" for b in baselines)
        lines.append(f"| {key} | {times[key]:.2f} | {ratio} |")
    return "\n".join(lines)


def registry_main(runs: int, previous: str | None) -> None:
    """``--registry``: only the registry rows (a fake server is started for the request)."""
    server, port = start_server(None)
    try:
        times = time_registry(runs, f"http://127.0.0.1:{port}/v1", previous)
        print(registry_table(times))
    finally:
        server.terminate()
        server.wait()


def measure_rss(lib: str, mode: str, base: str, cpu: int | None, cfg: dict[str, Any]) -> dict:
    cmd = [sys.executable, str(Path(__file__)), "--rss", lib, mode, "--base", base]
    cmd += ["--rss-streams", str(cfg["rss_streams"]), "--rss-chunks", str(cfg["rss_chunks"])]
    if cpu is not None:
        cmd += ["--cpu", str(cpu)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=_env())
    result = _read_result(proc)
    proc.wait()
    return {"mib": result["peak_kib"] / 1024, "base_mib": result["base_kib"] / 1024}


def run_benchmarks(cfg: dict[str, Any], pin: bool) -> dict[str, Any]:
    two_cpus = hasattr(os, "sched_getaffinity") and {0, 1} <= os.sched_getaffinity(0)
    pin = pin and two_cpus
    client_cpu = CLIENT_CPU if pin else None
    server, port = start_server(SERVER_CPU if pin else None)
    if client_cpu is not None:
        _pin(client_cpu)  # the parent mostly sleeps; its children inherit CPU 0
    base = f"http://127.0.0.1:{port}/v1"
    results: dict[str, Any] = {
        "config": cfg,
        "pinned": pin,
        "python": platform.python_version(),
        "loadavg_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "cpu": [],
    }
    workers: dict[str, Worker] = {}
    try:
        t0 = time.perf_counter()
        results["imports"] = time_imports(cfg["import_runs"], cfg["cold_runs"], base)
        print(f"  imports done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)

        workers = {lib: Worker(lib, base, client_cpu) for lib in cfg["libs"]}
        for w in workers.values():
            w.wait_ready()
        print(f"  workers ready ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
        plan: list[tuple[str, str, dict[str, Any]]] = [
            ("seq_sync", "us", {"n": cfg["seq_n"], "warmup": cfg["seq_warmup"]}),
            ("seq_async", "us", {"n": cfg["seq_n"], "warmup": cfg["seq_warmup"]}),
            (
                "conc_async",
                "rps",
                {
                    "concurrency": cfg["concurrency"],
                    "warmup_s": cfg["warmup_s"],
                    "window_s": cfg["window_s"],
                },
            ),
            (
                "stream_sync",
                "us",
                {
                    "chunks": cfg["stream_chunks"],
                    "n": cfg["stream_n"],
                    "warmup": cfg["stream_warmup"],
                },
            ),
            (
                "streams_async",
                "chunks_per_s",
                {
                    "concurrency": cfg["streams_concurrency"],
                    "chunks": cfg["stream_chunks"],
                    "warmup_s": cfg["warmup_s"],
                    "window_s": cfg["streams_window_s"],
                },
            ),
        ]
        rounds: dict[str, dict[str, list[float]]] = {p: {} for p, _, _ in plan}
        for r in range(cfg["rounds"]):
            order = list(workers.values())
            if r % 2:
                order.reverse()  # alternate the order so no library always goes first
            for phase, key, params in plan:
                # Latency phases run in slices, the libraries taking turns, so a burst of
                # other work on the machine hits them all alike; throughput phases run whole.
                slices = cfg["slices"] if "n" in params else 1
                samples: dict[str, list[float]] = {}
                for part in range(slices):
                    for w in order:
                        sync_cls, async_cls = LIBS[w.lib]
                        if (sync_cls if phase.endswith("_sync") else async_cls) is None:
                            continue
                        if w.lib == "openai" and r >= cfg["openai_rounds"]:
                            continue
                        p = dict(params)
                        if slices > 1:
                            p["n"] = max(1, params["n"] // slices)
                            p["warmup"] = params["warmup"] if part == 0 else 2
                        cpu0, wall0 = _proc_cpu_s(server.pid), time.perf_counter()
                        answer = w.run(phase, **p)
                        wall = time.perf_counter() - wall0
                        busy = (_proc_cpu_s(server.pid) - cpu0) / wall
                        results["cpu"].append(
                            {
                                "phase": phase,
                                "lib": w.lib,
                                "wall_s": round(wall, 2),
                                "server": round(busy, 3),
                                "client": round(answer["cpu_share"], 3),
                            }
                        )
                        if "samples" in answer:
                            samples.setdefault(w.lib, []).extend(answer["samples"])
                        else:
                            rounds[phase].setdefault(w.lib, []).append(answer[key])
                for lib, values in samples.items():
                    rounds[phase].setdefault(lib, []).append(statistics.median(values))
            print(f"  round {r + 1} done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
        for phase, per_lib in rounds.items():
            results[phase] = {
                lib: {"value": statistics.median(v), "rounds": v} for lib, v in per_lib.items()
            }
        for w in workers.values():
            w.close()
        workers = {}

        results["rss_sync"] = {}
        results["rss_async"] = {}
        for lib, mode in cfg["rss"]:
            results[f"rss_{mode}"][lib] = measure_rss(lib, mode, base, client_cpu, cfg)
        print(f"  rss done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
        results["elapsed_s"] = time.perf_counter() - t0
    finally:
        for w in workers.values():
            w.close()
        server.terminate()
        server.wait()
    results["loadavg_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    return results


# ---------------------------------------------------------------------------------------------
# Report


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "ms":
        return f"{value:.0f} ms" if value >= 100 else f"{value:.1f} ms"
    if unit == "us":
        return f"{value:.0f} µs" if value >= 20 else f"{value:.2f} µs"
    if unit == "/s":
        return f"{value:,.0f}/s"
    if unit == "MiB":
        return f"{value:.1f} MiB"
    return f"{value:g}"


def build_table(res: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    imp = res["imports"]

    def val(section: str, lib: str) -> float | None:
        entry = res.get(section, {}).get(lib)
        if entry is None:
            return None
        return entry.get("value", entry.get("ms", entry.get("mib")))

    def paired(section: str, base: str, op: Callable[[float, float], float]) -> float:
        """Median over rounds of op(llmrouter, base), each pair measured in the same round."""
        if section.startswith("import:"):
            mine, theirs = imp[section]["samples"], imp[f"import:{base}"]["samples"]
        else:
            mine, theirs = res[section]["llmrouter"]["rounds"], res[section][base]["rounds"]
        return statistics.median(op(x, y) for x, y in zip(mine, theirs, strict=True))

    def ratio_of(x: float, y: float) -> float:
        return x / y

    def diff_of(x: float, y: float) -> float:
        return x - y

    verdicts: list[dict[str, Any]] = []
    rows = []

    def row(
        label: str,
        unit: str,
        values: dict[str, float | None],
        compare: str,
        target: str,
        ok: bool | None,
    ) -> None:
        cells = [_fmt(values.get(lib), unit) for lib in ("httpx2", "aiohttp", "openai")]
        cells.append(_fmt(values.get("llmrouter"), unit))
        verdict = "—" if ok is None else ("PASS" if ok else "FAIL")
        rows.append(f"| {label} | " + " | ".join(cells) + f" | {compare} | {target} | {verdict} |")
        if ok is not None:
            verdicts.append({"metric": label, "measured": compare, "target": target, "pass": ok})

    # (a) import
    a = {lib: imp[f"import:{lib}"]["ms"] for lib in ("httpx2", "aiohttp", "openai", "llmrouter")}
    ratio = paired("import:llmrouter", "openai", ratio_of)
    row(
        "(a) import (`import llmrouter; from llmrouter import Client`)",
        "ms",
        a,
        f"{ratio:.2f}x openai",
        "<= 0.30x openai",
        ratio <= 0.3,
    )
    a2 = imp["import:llmrouter_async"]["ms"]
    row(
        "(a) import, `from llmrouter import AsyncClient` (info)",
        "ms",
        {"llmrouter": a2},
        f"{a2 / a['openai']:.2f}x openai",
        "—",
        None,
    )
    cold = {lib: imp[f"cold:{lib}"]["ms"] for lib in COLD}
    row(
        "cold start: import + client + 1st request (info)",
        "ms",
        cold,
        f"{cold['llmrouter'] / cold['openai']:.2f}x openai",
        "—",
        None,
    )
    # (b)
    b = {lib: val("seq_sync", lib) for lib in LIBS}
    diff = paired("seq_sync", "httpx2", diff_of)
    row(
        "(b) sync request, sequential (median)",
        "us",
        b,
        f"{diff:+.0f} µs vs httpx2",
        "<= +150 µs",
        diff <= 150,
    )
    b2 = {lib: val("seq_async", lib) for lib in LIBS}
    row(
        "(b) async request, sequential (median)",
        "us",
        b2,
        f"{paired('seq_async', 'aiohttp', diff_of):+.0f} µs vs aiohttp",
        "—",
        None,
    )
    c = {lib: val("conc_async", lib) for lib in LIBS}
    ratio = paired("conc_async", "aiohttp", ratio_of)
    row(
        f"(c) async requests/s, concurrency {res['config']['concurrency']}",
        "/s",
        c,
        f"{ratio:.2f}x aiohttp",
        ">= 0.80x aiohttp",
        ratio >= 0.8,
    )
    d = {lib: val("stream_sync", lib) for lib in LIBS}
    ratio = paired("stream_sync", "httpx2", ratio_of)
    row(
        f"(d) sync per-chunk time, {res['config']['stream_chunks']}-chunk stream",
        "us",
        d,
        f"{ratio:.2f}x httpx2",
        "<= 1.50x httpx2",
        ratio <= 1.5,
    )
    e = {lib: val("streams_async", lib) for lib in LIBS}
    ratio = paired("streams_async", "aiohttp", ratio_of)
    row(
        f"(e) async chunks/s, {res['config']['streams_concurrency']} concurrent streams",
        "/s",
        e,
        f"{ratio:.2f}x aiohttp",
        ">= 0.80x aiohttp",
        ratio >= 0.8,
    )
    n = res["config"]["rss_streams"]
    f1 = {lib: v["mib"] for lib, v in res["rss_sync"].items()}
    ratio = f1["llmrouter"] / f1["httpx2"]
    row(
        f"(f) peak RSS, {n} open streams, sync",
        "MiB",
        f1,
        f"{ratio:.2f}x httpx2",
        "<= 1.20x httpx2",
        ratio <= 1.2,
    )
    f2 = {lib: v["mib"] for lib, v in res["rss_async"].items()}
    ratio = f2["llmrouter"] / f2["aiohttp"]
    row(
        f"(f) peak RSS, {n} open streams, async",
        "MiB",
        f2,
        f"{ratio:.2f}x aiohttp",
        "<= 1.20x aiohttp",
        ratio <= 1.2,
    )
    for mode, raw in (("sync", "httpx2"), ("async", "aiohttp")):
        grow = {lib: v["mib"] - v["base_mib"] for lib, v in res[f"rss_{mode}"].items()}
        row(
            f"(f) RSS growth from the {n} streams (peak - after warm-up), {mode} (info)",
            "MiB",
            grow,
            f"{grow['llmrouter'] / grow[raw]:.2f}x {raw}",
            "—",
            None,
        )

    header = (
        "| metric | raw httpx2 | raw aiohttp | openai SDK | llmrouter | llmrouter vs baseline "
        "| target | result |\n|---|---:|---:|---:|---:|---|---|---|"
    )
    notes = [
        "",
        "Async rows use httpx2.AsyncClient / AsyncOpenAI / llmrouter.AsyncClient. Values in "
        "(a)-(e) are medians over samples/rounds; 'vs baseline' is the median of per-round "
        "pairs (same run, same round), so drift on a shared machine cancels out. (f) is one "
        "fresh process per client. "
        + (
            f"The openai SDK ran {res['config']['openai_rounds']} of {res['config']['rounds']} "
            "rounds."
            if "openai" in res["config"]["libs"]
            else "The openai SDK was measured in the import rows only (--quick)."
        ),
    ]
    cpu = res["cpu"]
    if cpu:
        busiest = max(cpu, key=lambda x: x["server"])
        note = (
            f"Fake server CPU, busiest measurement: {busiest['server'] * 100:.0f}% of one core "
            f"({busiest['phase']}, {busiest['lib']})"
        )
        if busiest["server"] > 0.9:
            note += " — near saturation: throughput rows may measure the server."
        loaded = [x for x in cpu if x["phase"] in ("conc_async", "streams_async")]
        if loaded:
            least = min(loaded, key=lambda x: x["client"])
            note += (
                f"; client CPU share in the throughput phases: lowest "
                f"{least['client'] * 100:.0f}% ({least['phase']}, {least['lib']})"
            )
            if least["client"] < 0.8:
                note += " — something else was using the client's CPU: rerun when idle"
        notes.append(note + ".")
    notes.append(
        f"Pinned client/server to CPU {CLIENT_CPU}/{SERVER_CPU}: {res['pinned']}; "
        f"load average at start {res['loadavg_start']}, end {res['loadavg_end']}; "
        f"run took {res['elapsed_s']:.0f} s."
    )
    return "\n".join([header, *rows, *notes]), verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description="llmrouter client overhead benchmark")
    parser.add_argument("--quick", action="store_true", help="a ~30 s run with fewer samples")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument(
        "--registry", type=int, metavar="RUNS", help="only the backend registry's cost (g)"
    )
    parser.add_argument(
        "--previous", metavar="TREE", help="with --registry: a source tree of llmrouter before it"
    )
    parser.add_argument(
        "--otel",
        action="store_true",
        help="only telemetry's cost: llmrouter with it off, on (API only), on (SDK), raw clients",
    )
    # Internal: the worker processes.
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--rss", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--base", help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--rss-streams", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--rss-chunks", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(args.worker, args.base, args.cpu)
        return
    if args.rss:
        rss_main(*args.rss, args.base, args.cpu, args.rss_streams, args.rss_chunks)
        return

    if args.registry:
        registry_main(args.registry, args.previous)
        return
    if args.otel:
        from otel_overhead import otel_main

        otel_main(quick=args.quick, pin=not args.no_pin, json_path=args.json)
        return

    cfg = QUICK if args.quick else FULL
    print(f"llmrouter overhead benchmark ({'quick' if args.quick else 'full'})", file=sys.stderr)
    results = run_benchmarks(dict(cfg), pin=not args.no_pin)
    table, verdicts = build_table(results)
    results["verdicts"] = verdicts
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

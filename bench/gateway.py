"""What the gateway (``llmrouter serve``) adds over calling the backend directly.

Usage::

    python bench/gateway.py [--quick] [--no-stream]
    python bench/gateway.py --wrk [--quick] [--workers N]

``--wrk`` runs the comparison of issue 14 instead (see :func:`wrk_main`): ``wrk`` as the load
generator, and, in one run on the same fake backend, the direct baseline, ``llmrouter serve``
with 1 worker (streams passed through, and once with ``--no-passthrough`` for the re-encoding
path), with N workers, and a hand-written FastAPI + AsyncOpenAI service on uvicorn (uvloop)
with 1 and N workers (``bench/_fastapi_openai.py``).

Method
------
* A fast fake OpenAI-compatible server (``bench/_fakeserver.py``, cached responses) runs in
  its own process; the gateway (``python -m llmrouter serve``, with one API key and its access
  log on, written to a file) runs in another, in front of it. Where the platform allows and
  there are two CPUs, the gateway is pinned to CPU 0 and the fake server and the load
  generator share CPU 1, so the gateway's cost is not hidden by, nor added to, theirs.
* The load generator (this process, ``aiohttp``, no pool limit) runs ``c`` client tasks, each
  sending requests back to back, at ``c`` = 1, 32 and 256, against the backend directly and
  through the gateway, taking turns (direct, gateway) within each round. Each measurement warms
  up, then counts the requests completed within a fixed window and keeps each one's latency.
* A row gives requests/s and p50/p99 latency for both paths, the throughput ratio, and the
  added latency (gateway minus direct, p50 and p99). Values are medians over rounds.
* ``json`` rows are plain chat completions; ``stream`` rows are 16-chunk streams, timed to the
  end of the stream (the gateway parses and re-serialises every chunk).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _fakeserver import spawn_port_process  # bench/ is on sys.path when run as a script

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
KEY = "sk-bench-gateway-key"
CONCURRENCY = (1, 32, 256)
FULL = {"rounds": 3, "warmup_s": 0.5, "window_s": 2.0}
QUICK = {"rounds": 1, "warmup_s": 0.3, "window_s": 1.0}
BODY = {"model": "m", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16}


def _cpus() -> tuple[int | None, int | None]:
    """(gateway CPU, fake server + load generator CPU), or Nones when pinning is not possible."""
    if not hasattr(os, "sched_getaffinity"):
        return None, None
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return None, None
    return allowed[0], allowed[1]


def start_fake(cpu: int | None) -> tuple[subprocess.Popen[str], int]:
    cmd = [sys.executable, str(HERE / "_fakeserver.py"), "--port", "0"]
    if cpu is not None:
        cmd += ["--cpu", str(cpu)]
    return spawn_port_process(cmd)


def start_gateway(
    backend_port: int, cpu: int | None, log: Any
) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "LLMROUTER_API_KEYS": f"bench:{KEY}"}
    env.pop("LLMROUTER_URL", None)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    url = f"http://127.0.0.1:{backend_port}/v1?model=m"
    cmd = [sys.executable, "-m", "llmrouter", "serve", "--port", "0", "--url", url]

    def pin() -> None:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})

    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=env, preexec_fn=pin
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on " not in line:
        proc.kill()
        raise RuntimeError(f"gateway did not start: {line!r}")
    return proc, line.split("listening on ")[1].split()[0]


def _quantile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(int(len(ordered) * q), len(ordered) - 1)]


async def measure(
    session: Any, url: str, headers: dict[str, str], stream: bool, c: int, cfg: dict[str, Any]
) -> dict[str, float]:
    """Requests/s and latency quantiles (ms) of ``c`` concurrent loops over one window."""
    body = json.dumps({**BODY, "stream": True} if stream else BODY).encode()
    latencies: list[float] = []
    window: list[float] = [float("inf"), float("inf")]  # start, end

    async def one() -> None:
        async with session.post(url, data=body, headers=headers) as response:
            data = await response.read()
        if response.status != 200 or (stream and not data.rstrip().endswith(b"[DONE]")):
            raise RuntimeError(f"{url}: HTTP {response.status}: {data[:200]!r}")

    async def loop() -> None:
        clock = time.perf_counter
        while True:
            t0 = clock()
            await one()
            t1 = clock()
            if window[0] <= t0 and t1 <= window[1]:
                latencies.append(t1 - t0)

    tasks = [asyncio.ensure_future(loop()) for _ in range(c)]
    await asyncio.sleep(cfg["warmup_s"])
    window[0] = time.perf_counter()
    window[1] = window[0] + cfg["window_s"]
    await asyncio.sleep(cfg["window_s"])
    for task in tasks:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    real = [e for e in errors if not isinstance(e, asyncio.CancelledError)]
    if real:
        raise real[0]
    if not latencies:
        raise RuntimeError(f"{url}: no request completed within the window")
    return {
        "rps": len(latencies) / cfg["window_s"],
        "p50": _quantile(latencies, 0.50) * 1000,
        "p99": _quantile(latencies, 0.99) * 1000,
    }


async def run(
    direct: str, gateway: str, cfg: dict[str, Any], modes: list[str]
) -> list[dict[str, Any]]:
    import aiohttp

    rows = []
    auth = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    plain = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        for mode in modes:
            stream = mode == "stream"
            for c in CONCURRENCY:
                per: dict[str, list[dict[str, float]]] = {"direct": [], "gateway": []}
                for _ in range(cfg["rounds"]):
                    per["direct"].append(await measure(session, direct, plain, stream, c, cfg))
                    per["gateway"].append(await measure(session, gateway, auth, stream, c, cfg))
                row: dict[str, Any] = {"mode": mode, "c": c}
                for side, values in per.items():
                    for k in ("rps", "p50", "p99"):
                        row[f"{side}_{k}"] = statistics.median(v[k] for v in values)
                row["ratio"] = statistics.median(
                    g["rps"] / d["rps"] for d, g in zip(per["direct"], per["gateway"], strict=True)
                )
                row["added_p50"] = statistics.median(
                    g["p50"] - d["p50"] for d, g in zip(per["direct"], per["gateway"], strict=True)
                )
                row["added_p99"] = statistics.median(
                    g["p99"] - d["p99"] for d, g in zip(per["direct"], per["gateway"], strict=True)
                )
                rows.append(row)
                print(f"  {mode} c={c}: done", file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    out = [
        "| mode | clients | direct req/s | gateway req/s | gateway / direct "
        "| direct p50 / p99 (ms) | gateway p50 / p99 (ms) | added p50 (ms) | added p99 (ms) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        out.append(
            f"| {r['mode']} | {r['c']} | {r['direct_rps']:,.0f} | {r['gateway_rps']:,.0f} "
            f"| {r['ratio']:.2f}x | {r['direct_p50']:.2f} / {r['direct_p99']:.2f} "
            f"| {r['gateway_p50']:.2f} / {r['gateway_p99']:.2f} "
            f"| {r['added_p50']:+.2f} | {r['added_p99']:+.2f} |"
        )
    return "\n".join(out)


# -- issue 14: wrk against llmrouter serve (1 and N workers) and FastAPI + AsyncOpenAI ---------

WRK_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = os.getenv("BENCH_AUTH")
wrk.body = os.getenv("BENCH_BODY")
"""
WRK_CASES = (("plain", 1), ("plain", 64), ("stream", 1), ("stream", 64))
STREAM_CHUNKS = 50


def _spawn_listening(cmd: list[str], cpus: set[int] | None, env: dict[str, str]) -> Any:
    """Start a server; return (process, port) once its 'listening on' line is printed."""

    def pin() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)

    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, preexec_fn=pin
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if "listening on http://" in line.lower() or "running on http://" in line.lower():
            port = int(line.split("http://")[1].split()[0].rsplit(":", 1)[1].rstrip("/)"))
            if "uvicorn" in " ".join(cmd):  # wait for every worker's startup line
                time.sleep(2.0)
            else:
                time.sleep(0.5)
            return proc, port
    raise RuntimeError(f"{cmd[:4]} did not start")


def _cpu_seconds(pid: int) -> float:
    import psutil

    proc = psutil.Process(pid)
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def _wrk(port: int, mode: str, c: int, seconds: float, cpu: int | None, lua: str) -> dict[str, Any]:
    body = {**BODY, "stream": True, "max_tokens": STREAM_CHUNKS} if mode == "stream" else BODY
    env = {**os.environ, "BENCH_BODY": json.dumps(body), "BENCH_AUTH": f"Bearer {KEY}"}
    cmd = ["wrk", "-t1", f"-c{c}", f"-d{seconds}s", "--latency", "-s", lua]
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu), *cmd]
    out = subprocess.run(
        [*cmd, f"http://127.0.0.1:{port}/v1/chat/completions"],
        capture_output=True,
        text=True,
        env=env,
        timeout=seconds + 30,
    ).stdout
    result: dict[str, Any] = {"errors": 0}
    units = {"us": 1e-3, "ms": 1.0, "s": 1e3}
    for line in out.splitlines():
        words = line.split()
        if line.startswith("Requests/sec:"):
            result["rps"] = float(words[1])
        elif len(words) == 2 and words[0] in ("50.000%", "50%", "99.000%", "99%"):
            value = words[1]
            unit = next(u for u in ("us", "ms", "s") if value.endswith(u))
            result["p50" if words[0].startswith("50") else "p99"] = (
                float(value[: -len(unit)]) * units[unit]
            )
        elif "requests in" in line:
            result["requests"] = int(words[0])
        elif line.strip().startswith("Non-2xx") or line.strip().startswith("Socket errors"):
            result["errors"] += sum(int(w.rstrip(",")) for w in words if w.rstrip(",").isdigit())
    if "rps" not in result:
        raise RuntimeError(f"wrk failed: {out[-500:]}")
    return result


def wrk_main(quick: bool, workers: int) -> None:
    """Every target, every case, one after another, with wrk; a table of ratios to direct."""
    import shutil

    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install -y wrk)")
    seconds = 2 if quick else 5
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    one = {allowed[0]} if len(allowed) >= 2 else None
    many = set(allowed[:workers]) if len(allowed) >= 2 else None
    load_cpu = allowed[-1] if len(allowed) >= 2 else None
    fake, fake_port = start_fake(load_cpu)
    backend = f"http://127.0.0.1:{fake_port}/v1"
    env = {**os.environ, "LLMROUTER_API_KEYS": f"bench:{KEY}", "BENCH_BACKEND": backend}
    env.pop("LLMROUTER_URL", None)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    serve = [sys.executable, "-m", "llmrouter", "serve", "--port", "0", "--no-access-log"]
    serve += ["--url", backend + "?model=m", "--max-in-flight-per-key", "0"]
    uvicorn = [sys.executable, "-m", "uvicorn", "--app-dir", str(HERE), "_fastapi_openai:app"]
    uvicorn += ["--port", "0", "--loop", "uvloop", "--no-access-log", "--log-level", "info"]
    targets: list[tuple[str, list[str] | None, set[int] | None]] = [
        ("direct (fake backend)", None, None),
        ("llmrouter serve, 1 worker", [*serve, "--workers", "1"], one),
        ("llmrouter serve, 1 worker, --no-passthrough", [*serve, "--no-passthrough"], one),
        ("llmrouter serve, 1 worker, asyncio loop", [*serve, "--loop", "asyncio"], one),
        (f"llmrouter serve, {workers} workers", [*serve, "--workers", str(workers)], many),
        ("FastAPI + AsyncOpenAI, uvicorn, 1 worker", [*uvicorn, "--workers", "1"], one),
        (
            f"FastAPI + AsyncOpenAI, uvicorn, {workers} workers",
            [*uvicorn, "--workers", str(workers)],
            many,
        ),
    ]
    rows: list[dict[str, Any]] = []
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(WRK_LUA)
        lua = f.name
    try:
        for name, cmd, cpus in targets:
            if cmd is None:
                proc, port = None, fake_port
            else:
                # uvicorn does not print the port it got for --port 0: give it one.
                if cmd is not None and "uvicorn" in " ".join(cmd):
                    import socket

                    with socket.socket() as s:
                        s.bind(("127.0.0.1", 0))
                        free = s.getsockname()[1]
                    cmd = [
                        *cmd[: cmd.index("--port") + 1],
                        str(free),
                        *cmd[cmd.index("--port") + 2 :],
                    ]
                proc, port = _spawn_listening(cmd, cpus, env)
            try:
                for mode, c in WRK_CASES:
                    pid = proc.pid if proc is not None else fake.pid
                    before = _cpu_seconds(pid)
                    r = _wrk(port, mode, c, seconds, load_cpu, lua)
                    cpu = _cpu_seconds(pid) - before
                    r["cpu_us"] = cpu / max(r.get("requests", 1), 1) * 1e6
                    rows.append({"target": name, "mode": mode, "c": c, **r})
                    print(f"  {name} {mode} c={c}: {r['rps']:,.0f} req/s", file=sys.stderr)
            finally:
                if proc is not None:
                    proc.terminate()
                    proc.wait(30)
    finally:
        fake.terminate()
        fake.wait(10)
        os.unlink(lua)
    direct = {(r["mode"], r["c"]): r for r in rows if r["target"].startswith("direct")}
    print(
        f"\nwrk, {seconds} s per case, one run (python {platform.python_version()}, "
        f"{len(allowed) or os.cpu_count()} usable CPUs; "
        f"1-worker servers on CPU {sorted(one or [])}, "
        f"{workers}-worker servers on CPUs {sorted(many or [])}, fake backend and wrk on CPU "
        f"{load_cpu}; streams are {STREAM_CHUNKS} chunks; CPU per request: the server's "
        "processes only)\n"
    )
    print(
        "| target | case | conns | req/s | x direct | p50 ms | added p50 | p99 ms | added p99 "
        "| CPU µs/req | errors |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        d = direct[(r["mode"], r["c"])]
        print(
            f"| {r['target']} | {r['mode']} | {r['c']} | {r['rps']:,.0f} "
            f"| {r['rps'] / d['rps']:.2f} | {r.get('p50', 0):.2f} "
            f"| {r.get('p50', 0) - d.get('p50', 0):+.2f} | {r.get('p99', 0):.2f} "
            f"| {r.get('p99', 0) - d.get('p99', 0):+.2f} | {r['cpu_us']:,.0f} | {r['errors']} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description="llmrouter gateway overhead benchmark")
    parser.add_argument("--quick", action="store_true", help="one round, shorter windows")
    parser.add_argument("--no-stream", action="store_true", help="plain completions only")
    parser.add_argument("--wrk", action="store_true", help="issue 14's comparison, with wrk")
    parser.add_argument("--workers", type=int, default=2, help="N for --wrk (2)")
    args = parser.parse_args()
    if args.wrk:
        wrk_main(args.quick, args.workers)
        return
    cfg = QUICK if args.quick else FULL
    modes = ["json"] if args.no_stream else ["json", "stream"]
    gateway_cpu, other_cpu = _cpus()
    if other_cpu is not None:
        os.sched_setaffinity(0, {other_cpu})
    fake, port = start_fake(other_cpu)
    with tempfile.TemporaryFile("w+") as log:
        gateway, base = start_gateway(port, gateway_cpu, log)
        try:
            rows = asyncio.run(
                run(
                    f"http://127.0.0.1:{port}/v1/chat/completions",
                    base + "/v1/chat/completions",
                    cfg,
                    modes,
                )
            )
        finally:
            gateway.terminate()
            gateway.wait(30)
            fake.terminate()
            fake.wait(10)
        log.seek(0)
        lines = sum(1 for _ in log)
    pinning = (
        f"gateway on CPU {gateway_cpu}; fake server and load generator on CPU {other_cpu}"
        if gateway_cpu is not None
        else "not pinned (fewer than two CPUs, or no sched_setaffinity)"
    )
    print(
        f"\nllmrouter gateway vs direct ({'quick' if args.quick else 'full'} run; "
        f"{cfg['rounds']} round(s) of {cfg['window_s']} s windows; python "
        f"{platform.python_version()}, {os.cpu_count()} CPUs; {pinning}; "
        f"{lines} access log lines written)\n"
    )
    print(table(rows))


if __name__ == "__main__":
    main()

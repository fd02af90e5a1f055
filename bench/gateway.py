"""What the gateway (``llmrouter serve``) adds over calling the backend directly.

Usage::

    python bench/gateway.py [--quick] [--no-stream]

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


def main() -> None:
    parser = argparse.ArgumentParser(description="llmrouter gateway overhead benchmark")
    parser.add_argument("--quick", action="store_true", help="one round, shorter windows")
    parser.add_argument("--no-stream", action="store_true", help="plain completions only")
    args = parser.parse_args()
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

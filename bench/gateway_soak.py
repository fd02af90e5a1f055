"""A soak of the gateway (``llmrouter serve``) under normal and abusive clients, on loopback.

Usage::

    python bench/gateway_soak.py [--duration 60] [--json PATH]

A benchmark, not a test: it runs for ``--duration`` seconds (60 to 120; half without the
abusive clients, half with them) plus a few seconds to start and settle, then stops by itself.

Method
------
* Two fast fake OpenAI backends (``bench/_fakeserver.py``, own processes), each behind a
  fault proxy (``tests/fakes/fault_proxy.py``, in this process) that gives 30 % of the
  connections a fault: a reset, a 500, a 429, a response cut mid-way, or a 0.5 s delay (6 %
  each). The gateway (``python -m llmrouter serve``, its own process, one API key) chains them.
* Normal clients: 8 loops, alternating plain completions and 16-chunk streams, each with the
  right key. Phase 1 runs them alone (the baseline); phase 2 adds the abusive clients:
  slow-header connections (100 at a time, one header line every 0.5 s, reopened when cut),
  clients that hang up after a stream's first chunk, garbage bodies, 5 MiB bodies, wrong keys.
* Reported per phase: normal requests served, their p50/p99 latency, and their non-200
  answers (5xx there come from the faulty backends: all attempts failed). For the abusive
  requests: the answers by status, and how many were 5xx (the target is 0: the client's input
  never causes one). For the gateway: RSS and open file descriptors at the start, between the
  phases and at the end (after idle connections have timed out), their maximum, and the event
  loop's task count at the start and the end (the difference is the leaked tasks, target 0).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from _fakeserver import spawn_port_process  # noqa: E402  (bench/ is on sys.path)

from tests.fakes.fault_proxy import Fault, FaultProxy  # noqa: E402

KEY = "sk-soak-gateway-key"
NORMAL_CLIENTS = 8
SLOW_CONNECTIONS = 100
GATEWAY_FLAGS = [
    "--header-timeout", "2", "--body-timeout", "5", "--keepalive-timeout", "2",
    "--max-connections", "512", "--max-in-flight-per-key", "64",
]  # fmt: skip
BODY = {"model": "m", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16}
FAULTS = [
    Fault("reset"),
    Fault("respond", status=500, body=b'{"error": {"message": "engine failed"}}'),
    Fault("respond", status=429, body=b'{"error": {"message": "slow down"}}'),
    Fault("close_after", after=60),
    Fault("delay", seconds=0.5),
]


def fill(proxy: FaultProxy, n: int, rng: random.Random) -> None:
    """Script ``n`` connections: 30 % of them get a fault, evenly spread over FAULTS."""
    for _ in range(n):
        proxy.script(rng.choice(FAULTS) if rng.random() < 0.30 else Fault("pass"))


def start_gateway(backends: list[str], log: Any) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "LLMROUTER_API_KEYS": f"soak:{KEY}"}
    env.pop("LLMROUTER_URL", None)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    url = ", ".join(f"{b}?model=m" for b in backends)
    cmd = [sys.executable, "-m", "llmrouter", "serve", "--port", "0", "--url", url]
    proc = subprocess.Popen(
        [*cmd, *GATEWAY_FLAGS], stdout=subprocess.PIPE, stderr=log, text=True, env=env
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on " not in line:
        proc.kill()
        raise RuntimeError(f"gateway did not start: {line!r}")
    return proc, line.split("listening on ")[1].split()[0]


def process_stats(pid: int) -> dict[str, float]:
    """RSS (MiB) and open file descriptors of a process, from /proc."""
    rss = 0.0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
    return {"rss_mib": round(rss, 1), "fds": len(os.listdir(f"/proc/{pid}/fd"))}


async def scrape(session: aiohttp.ClientSession, base: str, name: str) -> float:
    async with session.get(base + "/metrics") as r:
        for line in (await r.text()).splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return float("nan")


def quantile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(int(len(ordered) * q), len(ordered) - 1)] if ordered else float("nan")


class Tally:
    """What one phase saw."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.normal_status: Counter[int] = Counter()
        self.abuse_status: Counter[str] = Counter()
        self.abuse_5xx: Counter[str] = Counter()

    def abuse(self, kind: str, status: int) -> None:
        self.abuse_status[f"{kind} {status}"] += 1
        # A hang-up sends a valid request: a 5xx before its first chunk is the faulty backends'.
        if status >= 500 and kind != "hang_up":
            self.abuse_5xx[kind] += 1


async def normal_client(
    session: aiohttp.ClientSession, url: str, tally: list[Tally], stop: asyncio.Event, i: int
) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    n = i
    while not stop.is_set():
        stream = n % 2 == 1
        n += 1
        body = {**BODY, "stream": True} if stream else BODY
        t0 = time.perf_counter()
        try:
            async with session.post(url, json=body, headers=headers) as r:
                await r.read()
                status = r.status
        except aiohttp.ClientError:
            status = 0
        if status == 200:
            tally[-1].latencies.append(time.perf_counter() - t0)
        tally[-1].normal_status[status] += 1


async def slow_headers(host: str, port: int, stop: asyncio.Event, cut: list[float]) -> None:
    """One slowloris connection after another: a header line every 0.5 s until cut."""
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(0.5)
            continue
        opened = time.monotonic()
        try:
            writer.write(b"POST /v1/chat/completions HTTP/1.1\r\n")
            for i in range(1000):
                if stop.is_set():
                    break
                try:
                    data = await asyncio.wait_for(reader.read(4096), 0.5)
                    if not data or data.startswith(b"HTTP/1.1 408"):
                        cut.append(time.monotonic() - opened)
                        break
                except asyncio.TimeoutError:
                    pass
                writer.write(f"X-Slow-{i}: 1\r\n".encode())
        except ConnectionError:
            cut.append(time.monotonic() - opened)
        finally:
            writer.close()


async def abusive_client(
    session: aiohttp.ClientSession, url: str, tally: list[Tally], stop: asyncio.Event, i: int
) -> None:
    rng = random.Random(i)
    good = {"Authorization": f"Bearer {KEY}"}
    while not stop.is_set():
        kind = rng.choice(["garbage", "oversize", "wrong_key", "hang_up"])
        status = 0
        try:
            if kind == "garbage":
                data = rng.randbytes(rng.randrange(1, 2000))
                headers = {**good, "Content-Type": "application/json"}
                async with session.post(url, data=data, headers=headers) as r:
                    await r.read()
                    status = r.status
            elif kind == "oversize":
                data = b'{"messages": "' + b"x" * (5 * 1024 * 1024) + b'"}'
                async with session.post(url, data=data, headers=good) as r:
                    await r.read()
                    status = r.status
            elif kind == "wrong_key":
                headers = {"Authorization": "Bearer sk-wrong"}
                async with session.post(url, json=BODY, headers=headers) as r:
                    await r.read()
                    status = r.status
            else:  # a stream abandoned after its first chunk
                async with session.post(url, json={**BODY, "stream": True}, headers=good) as r:
                    status = r.status
                    if status == 200:
                        await r.content.readany()
                        r.close()  # hang up mid-stream
        except (aiohttp.ClientError, ConnectionError):
            status = 0  # the gateway closed on us (an oversize body: it stops reading)
        tally[-1].abuse(kind, status)


async def soak(base: str, pid: int, duration: float) -> dict[str, Any]:
    host, port = base.split("//")[1].split(":")
    url = base + "/v1/chat/completions"
    stats: dict[str, Any] = {}
    connector = aiohttp.TCPConnector(limit=0)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=True)
        ) as abuse_session,
    ):
        await asyncio.sleep(0.5)
        stats["start"] = process_stats(pid)
        stats["tasks_start"] = await scrape(session, base, "llmrouter_gateway_event_loop_tasks")
        tallies = [Tally()]
        stop_all, stop_abuse = asyncio.Event(), asyncio.Event()
        samples: list[dict[str, float]] = []
        normal = [
            asyncio.ensure_future(normal_client(session, url, tallies, stop_all, i))
            for i in range(NORMAL_CLIENTS)
        ]

        async def sample() -> None:
            while not stop_all.is_set():
                samples.append(process_stats(pid))
                await asyncio.sleep(1.0)

        sampler = asyncio.ensure_future(sample())
        await asyncio.sleep(duration / 2)
        stats["between"] = process_stats(pid)
        tallies.append(Tally())
        cut: list[float] = []
        abusers = [
            asyncio.ensure_future(slow_headers(host, int(port), stop_abuse, cut))
            for _ in range(SLOW_CONNECTIONS)
        ]
        abusers += [
            asyncio.ensure_future(abusive_client(abuse_session, url, tallies, stop_abuse, i))
            for i in range(4)
        ]
        await asyncio.sleep(duration / 2)
        stop_abuse.set()
        stop_all.set()
        await asyncio.gather(*normal, *abusers, sampler, return_exceptions=True)
        stats["end_busy"] = process_stats(pid)
    # Idle: every client connection closed; the gateway's keep-alive (2 s) and header (2 s)
    # timers have let go of theirs.
    await asyncio.sleep(3.0)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        stats["tasks_end"] = await scrape(session, base, "llmrouter_gateway_event_loop_tasks")
        stats["end"] = process_stats(pid)
    stats["max"] = {
        "rss_mib": max(s["rss_mib"] for s in samples),
        "fds": max(s["fds"] for s in samples),
    }
    stats["slow_cut_s"] = {
        "n": len(cut),
        "p50": quantile(cut, 0.5),
        "max": max(cut) if cut else float("nan"),
    }
    stats["phases"] = [
        {
            "served": len(t.latencies),
            "rps": round(len(t.latencies) / (duration / 2), 1),
            "p50_ms": round(quantile(t.latencies, 0.5) * 1000, 1),
            "p99_ms": round(quantile(t.latencies, 0.99) * 1000, 1),
            "normal_status": dict(t.normal_status),
            "abuse_status": dict(t.abuse_status),
            "abuse_5xx": sum(t.abuse_5xx.values()),
        }
        for t in tallies
    ]
    return stats


def report(stats: dict[str, Any], duration: float) -> str:
    base, abuse = stats["phases"]
    lines = [
        f"## Gateway soak ({duration:g} s: {duration / 2:g} s baseline, {duration / 2:g} s with "
        "abusive clients; backends 30 % faulty)",
        "",
        "| | without abusers | with abusers | ratio |",
        "|---|---|---|---|",
        f"| normal requests served | {base['served']} | {abuse['served']} | "
        f"{abuse['served'] / max(base['served'], 1):.2f} |",
        f"| p50 latency (ms) | {base['p50_ms']} | {abuse['p50_ms']} | "
        f"{abuse['p50_ms'] / base['p50_ms']:.2f} |",
        f"| p99 latency (ms) | {base['p99_ms']} | {abuse['p99_ms']} | "
        f"{abuse['p99_ms'] / base['p99_ms']:.2f} |",
        f"| normal answers by status | {base['normal_status']} | {abuse['normal_status']} | |",
        "",
        f"Abusive requests by kind and status: {abuse['abuse_status']}",
        f"5xx caused by client input: **{abuse['abuse_5xx']}** (target 0)",
        f"Slow-header connections cut: {stats['slow_cut_s']['n']}, after p50 "
        f"{stats['slow_cut_s']['p50']:.2f} s, max {stats['slow_cut_s']['max']:.2f} s "
        "(header timeout 2 s)",
        "",
        "| gateway | start | between phases | end (busy) | end (idle) | max |",
        "|---|---|---|---|---|---|",
    ]
    for key, label in (("rss_mib", "RSS (MiB)"), ("fds", "open fds")):
        row = [stats[p][key] for p in ("start", "between", "end_busy", "end")]
        lines.append(
            f"| {label} | " + " | ".join(str(v) for v in row) + f" | {stats['max'][key]} |"
        )
    leaked = stats["tasks_end"] - stats["tasks_start"]
    lines += [
        "",
        f"Event loop tasks: {stats['tasks_start']:.0f} at the start, {stats['tasks_end']:.0f} "
        f"at the end (idle): **{leaked:.0f} leaked** (target 0)",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--duration",
        type=float,
        default=60.0,
        help="seconds, at most 120 (60; under 60: a smoke run)",
    )
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    duration = min(max(args.duration, 4.0), 120.0)
    rng = random.Random(16)
    fakes = [spawn_port_process([sys.executable, str(HERE / "_fakeserver.py")]) for _ in (1, 2)]
    proxies = [FaultProxy(port) for _, port in fakes]
    gateway: subprocess.Popen[str] | None = None
    log = open(os.devnull, "w")  # noqa: SIM115 (the access log: not needed here)
    try:
        for proxy in proxies:
            proxy.__enter__()
            fill(proxy, 60_000, rng)
        gateway, base = start_gateway([p.url for p in proxies], log)
        stats = asyncio.run(soak(base, gateway.pid, duration))
    finally:
        if gateway is not None:
            gateway.terminate()
            gateway.wait(30)
        for proxy in proxies:
            proxy.__exit__(None, None, None)
        for proc, _ in fakes:
            proc.terminate()
            proc.wait(10)
        log.close()
    print(report(stats, duration))
    if args.json:
        Path(args.json).write_text(json.dumps(stats, indent=2, default=str))


if __name__ == "__main__":
    main()

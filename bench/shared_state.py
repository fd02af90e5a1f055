"""What shared state in Redis costs per request, and how fast a failure stops other processes.

Usage::

    python bench/shared_state.py [--quick] [--json out.json]

Method
------
* A real ``redis-server`` (started here on a free loopback port, no persistence) and the fake
  OpenAI server of ``bench/_fakeserver.py`` (its own process).
* Per-request time, in-memory state (the default) against ``state="redis://..."``, measured in
  the same process with interleaved rounds (the median of per-round ratios is reported):
  sync sequential, async sequential (concurrency 1), and async with 100 concurrent tasks
  (wall time / requests). The Redis commands the clients sent are read from ``INFO stats``
  before and after (``total_commands_processed``), so "round trips per request" is measured,
  not assumed.
* Propagation: 9 client processes (spawned; ``tests/state_worker.py``) share one Redis and a
  chain ``a, b``. The 8 watchers spin on their breaker for ``a``; process 0 sends one request
  that fails on ``a`` (its breaker opens at the first failure and publishes it). Reported: from
  the start of that request to the moment the last of the 8 others sees ``open``
  (``time.time()`` on one machine), median and max of several trials. Between trials the
  breaker closes through the cluster's one half-open probe.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _fakeserver import spawn_port_process  # bench/ is on sys.path when run as a script

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
HI = [{"role": "user", "content": "hi"}]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis() -> tuple[subprocess.Popen[bytes], int]:
    exe = shutil.which("redis-server")
    if exe is None:
        sys.exit("redis-server is not installed (apt-get install -y redis-server)")
    port = free_port()
    cmd = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis

    r = redis.Redis(port=port)
    for _ in range(500):
        try:
            r.ping()
            return proc, port
        except redis.ConnectionError:
            time.sleep(0.01)
    sys.exit("redis-server did not start")


def commands(port: int) -> int:
    import redis

    return int(redis.Redis(port=port).info("stats")["total_commands_processed"])


# -- per-request overhead -----------------------------------------------------------------


def sync_seq(client: Any, n: int) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        client.chat.completions.create(messages=HI, max_tokens=4)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


async def async_seq(client: Any, n: int) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        await client.chat.completions.create(messages=HI, max_tokens=4)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


async def async_conc(client: Any, n: int, concurrency: int = 100) -> float:
    per_task = n // concurrency

    async def loop() -> None:
        for _ in range(per_task):
            await client.chat.completions.create(messages=HI, max_tokens=4)

    start = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return (time.perf_counter() - start) / (per_task * concurrency)


def overhead(url: str, redis_url: str, redis_port: int, rounds: int, n: int) -> dict[str, Any]:
    from llmrouter import AsyncClient, Client

    results: dict[str, dict[str, list[float]]] = {}

    def add(row: str, which: str, value: float) -> None:
        results.setdefault(row, {}).setdefault(which, []).append(value)

    clients = {"memory": Client(url, state="memory://"), "redis": Client(url, state=redis_url)}
    for c in clients.values():
        sync_seq(c, 50)  # warm up
    cmds: dict[str, int] = {"memory": 0, "redis": 0}
    reqs = 0
    for _ in range(rounds):
        for which, c in clients.items():
            before = commands(redis_port)
            add("sync, sequential", which, sync_seq(c, n))
            cmds[which] += commands(redis_port) - before - 1  # minus the INFO itself
        reqs += n
    for c in clients.values():
        c.close()

    async def run_async() -> None:
        nonlocal reqs
        aclients = {
            "memory": AsyncClient(url, state="memory://"),
            "redis": AsyncClient(url, state=redis_url),
        }
        for c in aclients.values():
            await async_conc(c, 500)
        for _ in range(rounds):
            for which, c in aclients.items():
                before = commands(redis_port)
                add("async, concurrency 1", which, await async_seq(c, n))
                add("async, concurrency 100", which, await async_conc(c, n * 10))
                cmds[which] += commands(redis_port) - before - 1
            reqs += n * 11
        for c in aclients.values():
            await c.aclose()

    asyncio.run(run_async())
    table = {}
    for row, values in results.items():
        ratios = [r / m for m, r in zip(values["memory"], values["redis"], strict=True)]
        table[row] = {
            "memory_us": statistics.median(values["memory"]) * 1e6,
            "redis_us": statistics.median(values["redis"]) * 1e6,
            "ratio": statistics.median(ratios),
        }
    table["redis commands per request"] = {
        "memory": cmds["memory"] / reqs,
        "redis": cmds["redis"] / reqs,
    }
    return table


# -- propagation ----------------------------------------------------------------------------


def propagation(redis_url: str, trials: int) -> dict[str, float]:
    from tests.fakes.openai_fake import Error, OpenAIFake
    from tests.state_worker import worker

    ctx = multiprocessing.get_context("spawn")
    with OpenAIFake(models=["m"]) as a, OpenAIFake(models=["m"]) as b:
        urls = f"{a.url}?model=m, {b.url}?model=m"
        pipes, procs = [], []
        for _ in range(9):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=worker, args=(child, urls, redis_url, 0.3))
            proc.start()
            pipes.append(parent)
            procs.append(proc)
        for conn in pipes:
            assert conn.recv() == "ready"
        samples = []
        try:
            for _ in range(trials):
                for conn in pipes[1:]:
                    conn.send(("watch", "open", 5.0))
                time.sleep(0.05)  # the watchers are spinning
                a.script(Error(503, {"error": {"message": "down"}}))
                start = time.time()
                pipes[0].send(("request", 1))
                seen = [conn.recv() for conn in pipes[1:]]
                pipes[0].recv()
                assert all(t is not None for t in seen), "a process never saw the breaker open"
                samples.append(max(seen) - start)
                # Close it again, cluster-wide: after the cooldown one process probes.
                for conn in pipes:
                    conn.send(("wait", "half_open", 5.0))
                for conn in pipes:
                    conn.recv()
                pipes[0].send(("request", 1))
                pipes[0].recv()
                for conn in pipes:
                    conn.send(("wait", "closed", 5.0))
                assert all(conn.recv() is not None for conn in pipes)
        finally:
            for conn in pipes:
                conn.send(("exit",))
            for proc in procs:
                proc.join(10)
    return {"median_ms": statistics.median(samples) * 1e3, "max_ms": max(samples) * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rounds, n, trials = (3, 200, 5) if args.quick else (7, 500, 15)
    redis_proc, redis_port = start_redis()
    server, port = spawn_port_process([sys.executable, str(HERE / "_fakeserver.py")])
    try:
        url = f"http://127.0.0.1:{port}/v1?model=m"
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        table = overhead(url, redis_url, redis_port, rounds, n)
        prop = propagation(redis_url + "?namespace=bench", trials)
    finally:
        server.terminate()
        redis_proc.terminate()
    print("| per request | in-memory state | Redis state | Redis vs memory |")
    print("|---|---:|---:|---:|")
    for row, v in table.items():
        if row.startswith("redis commands"):
            continue
        print(f"| {row} | {v['memory_us']:.0f} µs | {v['redis_us']:.0f} µs | {v['ratio']:.2f}x |")
    c = table["redis commands per request"]
    print(f"| Redis commands per request | {c['memory']:.3f} | {c['redis']:.3f} | — |")
    print()
    print(
        f"A failure in one process stops traffic from 8 others after {prop['median_ms']:.1f} ms "
        f"(median of {trials}; max {prop['max_ms']:.1f} ms), request included."
    )
    if args.json:
        args.json.write_text(json.dumps({"overhead": table, "propagation": prop}, indent=2))


if __name__ == "__main__":
    main()

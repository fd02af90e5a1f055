"""What OpenTelemetry costs a request: llmrouter with telemetry off and on, side by side.

Usage::

    python bench/overhead.py --otel [--quick] [--json out.json]

The same fake server, CPU pinning, worker processes and interleaved rounds as
``bench/overhead.py`` (its docstring says how). The workers, measured in turn in each round:

* ``httpx2`` / ``aiohttp``: the raw clients, the floor;
* ``llmrouter``: telemetry off (the default): what every user pays;
* ``llmrouter+otel-api``: ``telemetry=Telemetry()`` with no SDK provider set, so the API's
  no-op spans: llmrouter's own share (the event subscriber, attributes, ``traceparent``);
* ``llmrouter+otel``: the SDK as a service runs it: spans batched (``BatchSpanProcessor``) to an
  exporter that drops them, metrics aggregated in memory.

Reported: sequential sync and async request time, async requests/s at concurrency 200, and
async stream chunks/s (100 streams of 200 chunks), each as a value and as the median of the
per-round ratios against telemetry off.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from overhead import CLIENT_CPU, FULL, LIBS, QUICK, SERVER_CPU, Worker, _pin, start_server

ROUTERS = ["llmrouter", "llmrouter+otel-api", "llmrouter+otel"]
RAW = {"sync": "httpx2", "async": "aiohttp"}


def _plan(cfg: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    seq = {"n": cfg["seq_n"], "warmup": cfg["seq_warmup"]}
    window = {"warmup_s": cfg["warmup_s"], "window_s": cfg["window_s"]}
    return [
        ("seq_sync", "us", seq),
        ("seq_async", "us", seq),
        ("conc_async", "rps", {"concurrency": cfg["concurrency"], **window}),
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


def run(cfg: dict[str, Any], pin: bool) -> dict[str, dict[str, list[float]]]:
    """Per phase, per worker: the value of each round."""
    two_cpus = hasattr(os, "sched_getaffinity") and {0, 1} <= os.sched_getaffinity(0)
    pin = pin and two_cpus
    client_cpu = CLIENT_CPU if pin else None
    server, port = start_server(SERVER_CPU if pin else None)
    if client_cpu is not None:
        _pin(client_cpu)
    base = f"http://127.0.0.1:{port}/v1"
    libs = ["httpx2", "aiohttp", *ROUTERS]
    workers = {lib: Worker(lib, base, client_cpu) for lib in libs}
    rounds: dict[str, dict[str, list[float]]] = {}
    try:
        for w in workers.values():
            w.wait_ready()
        t0 = time.perf_counter()
        for r in range(cfg["rounds"]):
            order = list(workers.values())
            if r % 2:
                order.reverse()
            for phase, key, params in _plan(cfg):
                for w in order:
                    sync_cls, async_cls = LIBS[w.lib]
                    if (sync_cls if phase.endswith("_sync") else async_cls) is None:
                        continue
                    answer = w.run(phase, **params)
                    rounds.setdefault(phase, {}).setdefault(w.lib, []).append(answer[key])
            print(f"  round {r + 1} done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    finally:
        for w in workers.values():
            w.close()
        server.terminate()
        server.wait()
    return rounds


_ROWS = {
    "seq_sync": ("sync request, sequential (median)", "µs"),
    "seq_async": ("async request, sequential (median)", "µs"),
    "conc_async": ("async requests/s, concurrency 200", "/s"),
    "streams_async": ("async stream chunks/s, 100 streams x 200 chunks", "/s"),
}


def _cell(value: float, unit: str) -> str:
    return f"{value:.0f} µs" if unit == "µs" else f"{value:,.0f}/s"


def table(rounds: dict[str, dict[str, list[float]]]) -> str:
    """Values, and each telemetry-on worker's median per-round ratio to telemetry off."""
    lines = [
        "| measurement | raw client | llmrouter, telemetry off | on, API only | on, SDK "
        "| off vs raw | API only vs off | SDK vs off |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for phase, per_lib in rounds.items():
        label, unit = _ROWS[phase]
        raw = RAW["sync" if phase.endswith("_sync") else "async"]
        values = {lib: statistics.median(v) for lib, v in per_lib.items()}

        def ratio(lib: str, base: str, per_lib: dict[str, list[float]] = per_lib) -> str:
            pairs = zip(per_lib[lib], per_lib[base], strict=True)
            return f"{statistics.median(x / y for x, y in pairs):.2f}x"

        cells = [_cell(values[lib], unit) for lib in (raw, *ROUTERS)]
        ratios = [ratio("llmrouter", raw), ratio(ROUTERS[1], "llmrouter")]
        ratios.append(ratio(ROUTERS[2], "llmrouter"))
        lines.append(f"| {label} | " + " | ".join(cells + ratios) + " |")
    lines.append("")
    lines.append("Times: lower is better (a ratio above 1 is slower); rates: higher is better.")
    return "\n".join(lines)


def otel_main(*, quick: bool, pin: bool, json_path: str | None) -> None:
    cfg = dict(QUICK if quick else FULL)
    print(f"llmrouter telemetry overhead ({'quick' if quick else 'full'})", file=sys.stderr)
    rounds = run(cfg, pin)
    print(table(rounds))
    if json_path:
        Path(json_path).write_text(json.dumps({"config": cfg, "rounds": rounds}, indent=2) + "\n")

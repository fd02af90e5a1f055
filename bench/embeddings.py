"""What llmrouter's embeddings cost against raw aiohttp and the openai SDK, side by side in one run.

Usage::

    python bench/embeddings.py [--quick] [--json out.json]

Method
------
* The fake server of ``bench/overhead.py`` (``bench/_fakeserver.py``, raw asyncio, cached
  answers: one 384-float vector per input) runs in its own process pinned to CPU 1; this
  process, pinned to CPU 0, holds one client of each library and drives them in turn, round
  after round, so noise on the machine falls on all of them. A value is the median over rounds;
  a ratio is the median of per-round ratios. Every phase warms up first.
* All ask for ``encoding_format="float"`` (the openai SDK otherwise asks for base64), so the
  server's bytes are the same for everyone.
* Raw baseline: ``aiohttp.ClientSession.post(json=...)`` and ``pydantic_core.from_json`` of the
  body (the Rust parser llmrouter uses too; stdlib ``json.loads`` of 6,000 floats is slower and
  would flatter llmrouter), with ``TCPConnector(limit=0)``; the openai SDK with its defaults
  and ``max_retries=0``.

Measurements
------------
(a) per request: the median wall time of one ``embeddings.create`` of 16 inputs, sequential.
(b) a 10,000-input job: llmrouter is given the whole list (``?embed_batch=256``: it splits it
    into 40 parts and runs them, at most 8 at once, in order); the raw client runs the best of
    hand-written loops (batches of 256 under a semaphore of 4, 8 and 16, ``asyncio.gather``),
    the best of which is the baseline. Inputs per second.

Targets: (a) llmrouter within 1.2x the raw client; (b) at least 0.9x the raw client's best.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _fakeserver import pin, spawn_port_process

SMALL = [f"sentence number {i}" for i in range(16)]
JOB = [f"document {i}: a few words to embed" for i in range(10_000)]
BATCH = 256


async def raw_embed(session: Any, url: str, inputs: list[str]) -> list[list[float]]:
    import pydantic_core

    payload = {"model": "m", "input": inputs, "encoding_format": "float"}
    async with session.post(url, json=payload) as response:
        body = pydantic_core.from_json(await response.read())
    return [item["embedding"] for item in body["data"]]


async def raw_job(session: Any, url: str, width: int) -> int:
    gate = asyncio.Semaphore(width)

    async def part(start: int) -> list[list[float]]:
        async with gate:
            return await raw_embed(session, url, JOB[start : start + BATCH])

    parts = await asyncio.gather(*(part(i) for i in range(0, len(JOB), BATCH)))
    return sum(len(p) for p in parts)


async def timed(fn: Any, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        await fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


async def run(rounds: int, repeat: int) -> dict[str, Any]:
    import aiohttp
    import openai

    from llmrouter import AsyncClient

    proc, port = spawn_port_process(
        [sys.executable, str(Path(__file__).parent / "_fakeserver.py"), "--cpu", "1"]
    )
    pin(0)
    base = f"http://127.0.0.1:{port}/v1"
    url = base + "/embeddings"
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    sdk = openai.AsyncOpenAI(base_url=base, api_key="bench", max_retries=0)
    router = AsyncClient(f"{base}?embed_batch={BATCH}&model=m")
    rows: dict[str, list[float]] = {k: [] for k in ("raw", "openai", "llmrouter")}
    jobs: dict[str, list[float]] = {"raw best": [], "llmrouter": []}
    ratios_request: list[float] = []
    ratios_job: list[float] = []

    async def small_raw() -> None:
        assert len(await raw_embed(session, url, SMALL)) == 16

    async def small_sdk() -> None:
        resp = await sdk.embeddings.create(model="m", input=SMALL, encoding_format="float")
        assert len(resp.data) == 16

    async def small_router() -> None:
        resp = await router.embeddings.create(input=SMALL, encoding_format="float")
        assert len(resp.data) == 16

    async def job_router() -> None:
        resp = await router.embeddings.create(input=JOB, encoding_format="float")
        assert len(resp.data) == len(JOB)

    try:
        for fn in (small_raw, small_sdk, small_router, job_router):  # warm up
            await timed(fn, 3)
        await raw_job(session, url, 8)
        for _ in range(rounds):
            raw = await timed(small_raw, repeat)
            rows["raw"].append(raw)
            rows["openai"].append(await timed(small_sdk, repeat))
            mine = await timed(small_router, repeat)
            rows["llmrouter"].append(mine)
            ratios_request.append(mine / raw)
            best = min([await timed(lambda w=w: raw_job(session, url, w), 1) for w in (4, 8, 16)])
            jobs["raw best"].append(len(JOB) / best)
            routed = await timed(job_router, 1)
            jobs["llmrouter"].append(len(JOB) / routed)
            ratios_job.append(best / routed)
    finally:
        await router.close()
        await sdk.close()
        await session.close()
        proc.kill()
    result = {
        "per_request_us": {k: statistics.median(v) * 1e6 for k, v in rows.items()},
        "job_inputs_per_s": {k: statistics.median(v) for k, v in jobs.items()},
        "per_request_ratio_vs_raw": statistics.median(ratios_request),
        "job_ratio_vs_raw_best": statistics.median(ratios_job),
    }
    result["targets_met"] = {
        "per_request <= 1.2x raw": result["per_request_ratio_vs_raw"] <= 1.2,
        "job >= 0.9x raw best": result["job_ratio_vs_raw_best"] >= 0.9,
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()
    result = asyncio.run(run(rounds=3 if args.quick else 7, repeat=30 if args.quick else 100))
    for name, value in result["per_request_us"].items():
        print(f"per request (16 inputs)  {name:10} {value:9.0f} us")
    for name, value in result["job_inputs_per_s"].items():
        print(f"10,000-input job         {name:10} {value:9.0f} inputs/s")
    print(f"per request vs raw: {result['per_request_ratio_vs_raw']:.2f}x (target <= 1.2x)")
    print(f"job vs raw best:    {result['job_ratio_vs_raw_best']:.2f}x (target >= 0.9x)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

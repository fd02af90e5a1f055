"""vLLM streaming: raw ``AsyncLLM`` against ``vllm+local://``, and the ``vllm://`` server path
against the ``openai`` SDK on the same server. Run through ``python bench/engines.py --vllm``.

Method
------
* Model: SmolLM2-135M-Instruct converted to a Hugging Face folder (scripts/make_vllm_model.py),
  ``max_model_len=2048``, ``enforce_eager``, ``VLLM_CPU_KVCACHE_SPACE=1``; greedy decoding, the
  same prompt and ``max_tokens`` everywhere, ``ignore_eos`` so every stream has the same length.
* In process, one engine serves every variant (two engines do not fit two cores): "raw" is a
  coroutine on the engine's own loop iterating ``AsyncLLM.generate`` with DELTA outputs (no
  llmrouter layer, no thread hop); "sync" is ``llmrouter.Client`` (one thread per stream),
  "async" ``llmrouter.AsyncClient`` on the caller's loop.
* Server: ``python -m vllm.entrypoints.openai.api_server``; "openai" is ``openai.AsyncOpenAI``
  streaming, "llmrouter" is ``AsyncClient("vllm://...")``.
* Each variant runs 1 and 8 concurrent streams, rounds interleaved; reported: median TTFT and
  aggregate tokens/s (content chunks of all streams / wall time of the round), medians of rounds.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

MESSAGES = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]


def _model_dir() -> str:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run(
        [sys.executable, os.path.join(root, "scripts", "make_vllm_model.py")],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip().splitlines()[-1]


Round = Callable[[int], Awaitable[tuple[list[float], int, float]]]


async def _rounds(variants: dict[str, Round], runs: int) -> dict[tuple[str, int], dict[str, float]]:
    samples: dict[tuple[str, int], list[tuple[list[float], int, float]]] = {}
    for conc in (1, 8):
        for r in range(runs):
            names = list(variants)
            names = names[r % len(names) :] + names[: r % len(names)]
            for name in names:
                samples.setdefault((name, conc), []).append(await variants[name](conc))
    out = {}
    for key, rounds in samples.items():
        out[key] = {
            "ttft_ms": statistics.median(statistics.median(t) for t, _, _ in rounds),
            "tok_s": statistics.median(n / wall for _, n, wall in rounds),
        }
    return out


def _table(title: str, res: dict[tuple[str, int], dict[str, float]], base: str) -> str:
    rows = [f"### {title}", "", "| variant | streams | TTFT ms | tok/s (all streams) | vs "
            f"{base} |", "| --- | --- | --- | --- | --- |"]  # fmt: skip
    for (name, conc), v in sorted(res.items(), key=lambda kv: (kv[0][1], kv[0][0] != base)):
        ratio = v["tok_s"] / res[(base, conc)]["tok_s"]
        rows.append(f"| {name} | {conc} | {v['ttft_ms']:.1f} | {v['tok_s']:.1f} | {ratio:.3f}x |")
    return "\n".join(rows)


def bench_inprocess(model: str, runs: int, max_tokens: int) -> str:
    import llmrouter
    from llmrouter.backends import vllm_engine

    url = f"vllm+local://{model}?max_model_len=2048&enforce_eager=true"
    sync_client = llmrouter.Client(url)
    sync_client.models.list()  # starts the engine
    engine = vllm_engine._engines[next(iter(vllm_engine._engines))]
    kw: dict[str, Any] = {"max_tokens": max_tokens, "temperature": 0}
    extra = {"ignore_eos": True}

    async def raw_one() -> tuple[float, int]:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        tok = engine.tokenizer
        ids = tok.apply_chat_template(MESSAGES, tokenize=True, add_generation_prompt=True)
        ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
        sp = SamplingParams(output_kind=RequestOutputKind.DELTA, ignore_eos=True, **kw)
        start, first, n = time.perf_counter(), 0.0, 0
        async for out in engine.llm.generate({"prompt_token_ids": ids}, sp, uuid.uuid4().hex):
            if out.outputs[0].text:
                n += 1
                first = first or time.perf_counter() - start
        return first * 1000, n

    async def raw(conc: int) -> tuple[list[float], int, float]:
        async def all_() -> tuple[list[float], int, float]:
            start = time.perf_counter()
            res = await asyncio.gather(*(raw_one() for _ in range(conc)))
            return [t for t, _ in res], sum(n for _, n in res), time.perf_counter() - start

        fut = asyncio.run_coroutine_threadsafe(all_(), engine.loop)
        return await asyncio.wrap_future(fut)

    def sync_one(out: list[tuple[float, int]]) -> None:
        start, first, n = time.perf_counter(), 0.0, 0
        with sync_client.chat.completions.create(
            messages=MESSAGES, stream=True, extra_body=extra, **kw
        ) as stream:
            for c in stream:
                if c.choices and c.choices[0].delta.content:
                    n += 1
                    first = first or time.perf_counter() - start
        out.append((first * 1000, n))

    async def sync(conc: int) -> tuple[list[float], int, float]:
        def run() -> tuple[list[float], int, float]:
            res: list[tuple[float, int]] = []
            start = time.perf_counter()
            threads = [threading.Thread(target=sync_one, args=(res,)) for _ in range(conc)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return [t for t, _ in res], sum(n for _, n in res), time.perf_counter() - start

        return await asyncio.to_thread(run)

    async def main() -> dict[tuple[str, int], dict[str, float]]:
        async with llmrouter.AsyncClient(url) as aclient:

            async def one() -> tuple[float, int]:
                start, first, n = time.perf_counter(), 0.0, 0
                stream = await aclient.chat.completions.create(
                    messages=MESSAGES, stream=True, extra_body=extra, **kw
                )
                async with stream:
                    async for c in stream:
                        if c.choices and c.choices[0].delta.content:
                            n += 1
                            first = first or time.perf_counter() - start
                return first * 1000, n

            async def async_(conc: int) -> tuple[list[float], int, float]:
                start = time.perf_counter()
                res = await asyncio.gather(*(one() for _ in range(conc)))
                return [t for t, _ in res], sum(n for _, n in res), time.perf_counter() - start

            await raw(1), await sync(1), await async_(1)  # warm-up
            variants = {"raw AsyncLLM": raw, "llmrouter sync": sync, "llmrouter async": async_}
            return await _rounds(variants, runs)

    res = asyncio.run(main())
    sync_client.close()
    return _table("vllm+local:// vs raw AsyncLLM (one engine)", res, "raw AsyncLLM")


def bench_server(model: str, runs: int, max_tokens: int) -> str:
    import httpx2
    import openai

    import llmrouter

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from tests.conftest import free_port

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
         "--served-model-name", "smollm2", "--max-model-len", "2048", "--enforce-eager",
         "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx2.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("vLLM server did not start")
            time.sleep(0.5)
        kw: dict[str, Any] = {"max_tokens": max_tokens, "temperature": 0}

        async def main() -> dict[tuple[str, int], dict[str, float]]:
            oa = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x")
            async with llmrouter.AsyncClient(f"vllm://127.0.0.1:{port}?model=smollm2") as lr:

                async def one(client: Any, model_kw: dict[str, Any]) -> tuple[float, int]:
                    start, first, n = time.perf_counter(), 0.0, 0
                    stream = await client.chat.completions.create(
                        messages=MESSAGES, stream=True, extra_body={"ignore_eos": True},
                        **model_kw, **kw,
                    )  # fmt: skip
                    async with stream:
                        async for c in stream:
                            if c.choices and c.choices[0].delta.content:
                                n += 1
                                first = first or time.perf_counter() - start
                    return first * 1000, n

                def variant(client: Any, model_kw: dict[str, Any]) -> Round:
                    async def run(conc: int) -> tuple[list[float], int, float]:
                        start = time.perf_counter()
                        res = await asyncio.gather(*(one(client, model_kw) for _ in range(conc)))
                        wall = time.perf_counter() - start
                        return [t for t, _ in res], sum(n for _, n in res), wall

                    return run

                variants = {
                    "openai SDK": variant(oa, {"model": "smollm2"}),
                    "llmrouter vllm://": variant(lr, {}),
                }
                for v in variants.values():
                    await v(1)  # warm-up
                result = await _rounds(variants, runs)
            await oa.close()
            return result

        res = asyncio.run(main())
    finally:
        proc.terminate()
        proc.wait(30)
    return _table("vllm:// vs the openai SDK (same vLLM server)", res, "openai SDK")


def run(runs: int, max_tokens: int) -> str:
    """Both tables, as markdown."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    model = _model_dir()
    first = bench_inprocess(model, runs, max_tokens)
    print(first + "\n", flush=True)  # the server half takes as long again
    return bench_server(model, runs, max_tokens)

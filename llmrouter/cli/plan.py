"""``llmrouter plan``: will a model fit, on which GPUs, and is self-hosting cheaper than an API?

The arithmetic is :mod:`llmrouter.plan`; this module reads the options and prints the result
with every assumption it rests on (or all of it as JSON).
"""

from __future__ import annotations

import argparse
import json
import math
from typing import TYPE_CHECKING

from llmrouter.cli.table import render

if TYPE_CHECKING:
    from llmrouter.plan import ApiPrice, ModelShape, Plan, PlanData, Precision

__all__ = ["add_parser", "run"]


def _finite(text: str) -> float:
    """An argparse type: a finite number (``nan`` and ``inf`` parse as floats; refused here)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    plan = sub.add_parser(
        "plan",
        parents=[common],
        help="size GPUs and compare self-hosting cost with an API",
        description="Weights and KV-cache memory, the GPUs a model fits on (tensor parallel 1, "
        "2, 4 or 8), and the monthly cost of self-hosting against an API for a stated load. "
        "Prices are examples; use --prices FILE for yours.",
    )
    plan.add_argument("model", nargs="?", help="a preset (llama-3.1-8b, ...; --list shows all)")
    plan.add_argument("--list", action="store_true", help="list presets, precisions, GPUs, APIs")
    shape = plan.add_argument_group("model shape (overrides the preset)")
    shape.add_argument("--params", help="parameters: 8, 8b, 70B, 135M (billions when bare)")
    shape.add_argument("--layers", type=int, help="transformer layers")
    shape.add_argument("--kv-heads", type=int, help="key/value heads (GQA)")
    shape.add_argument("--head-dim", type=int, help="dimension of one attention head")
    memory = plan.add_argument_group("memory")
    memory.add_argument("--precision", default="fp16", help="weight format (fp16)")
    memory.add_argument("--kv-precision", default="fp16", help="KV-cache element type (fp16)")
    memory.add_argument("--context", type=int, default=8192, help="tokens per sequence (8192)")
    memory.add_argument(
        "--sequences",
        "--concurrency",
        dest="sequences",
        type=int,
        help="sequences in the KV cache at once: the requests served together (not given: "
        "sized for 1, and the plan says so and how many each GPU has room for)",
    )
    memory.add_argument(
        "--headroom",
        type=_finite,
        default=0.9,
        help="share of GPU memory for weights and KV cache (0.9, vLLM's default)",
    )
    memory.add_argument("--gpu", action="append", help="only this GPU (repeatable; --list)")
    cost = plan.add_argument_group("cost")
    cost.add_argument("--requests-per-day", type=_finite, help="the load (turns cost on)")
    cost.add_argument("--input-tokens", type=int, default=1000, help="per request (1000)")
    cost.add_argument("--output-tokens", type=int, default=250, help="per request (250)")
    cost.add_argument("--api", default="gpt-4o-mini", help="API price preset (gpt-4o-mini)")
    cost.add_argument("--api-input-price", type=_finite, help="API $ per million input tokens")
    cost.add_argument("--api-output-price", type=_finite, help="API $ per million output tokens")
    plan.add_argument("--prices", help="JSON file merged over the packaged specs and prices")
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")


def run(args: argparse.Namespace) -> int:
    from llmrouter import plan as p
    from llmrouter.errors import ConfigError

    data = p.load_data(args.prices)
    if args.list:
        print(_listing(data))
        return 0

    def pick(table: dict[str, Precision], name: str, option: str) -> Precision:
        if name.lower() not in table:
            raise ConfigError(f"{option} {name!r}: expected one of {', '.join(table)}")
        return table[name.lower()]

    model = _shape(args, data)
    gpus = list(data.gpus.values())
    if args.gpu:
        unknown = [g for g in args.gpu if g.lower() not in data.gpus]
        if unknown:
            raise ConfigError(f"--gpu {unknown[0]!r}: expected one of {', '.join(data.gpus)}")
        gpus = [data.gpus[g.lower()] for g in args.gpu]
    load = api = None
    if args.requests_per_day is not None:
        if args.requests_per_day < 0 or args.input_tokens < 0 or args.output_tokens < 0:
            raise ConfigError("the load must not be negative")
        load = p.Load(args.requests_per_day, args.input_tokens, args.output_tokens)
        api = _api_price(args, data)
    result = p.make_plan(
        model,
        pick(data.precisions, args.precision, "--precision"),
        pick(data.precisions, args.kv_precision, "--kv-precision"),
        gpus,
        context=args.context,
        sequences=args.sequences,
        headroom=args.headroom,
        load=load,
        api=api,
    )
    if args.json:
        body = {
            **result.as_dict(),
            "prices": {"as_of": data.as_of, "note": data.note, "sources": list(data.sources)},
        }
        print(json.dumps(body, indent=2))
    else:
        print(_text(result, data, preset=args.model is not None))
    return 0


def _shape(args: argparse.Namespace, data: PlanData) -> ModelShape:
    """The preset's shape with the options given over it, or a custom model's."""
    from dataclasses import replace

    from llmrouter import plan as p
    from llmrouter.errors import ConfigError

    if args.model is None:
        if args.params is None:
            raise ConfigError("name a preset (llmrouter plan --list) or give --params")
        base = p.ModelShape("custom", p.parse_count(args.params))
    elif args.model.lower() in data.models:
        base = data.models[args.model.lower()]
    else:
        raise ConfigError(
            f"unknown preset {args.model!r}: expected one of {', '.join(data.models)}"
        )
    overrides = {
        "params_b": p.parse_count(args.params) if args.params is not None else None,
        "layers": args.layers,
        "kv_heads": args.kv_heads,
        "head_dim": args.head_dim,
    }
    for key, value in overrides.items():
        if isinstance(value, int) and value <= 0:
            raise ConfigError(f"--{key.replace('_', '-')} {value}: expected a positive number")
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


def _api_price(args: argparse.Namespace, data: PlanData) -> ApiPrice:
    from llmrouter import plan as p
    from llmrouter.errors import ConfigError

    given = (args.api_input_price, args.api_output_price)
    if given != (None, None):
        if None in given:
            raise ConfigError("give both --api-input-price and --api-output-price")
        if min(args.api_input_price, args.api_output_price) < 0:
            raise ConfigError("API prices must not be negative")
        return p.ApiPrice("stated", args.api_input_price, args.api_output_price)
    if args.api.lower() not in data.apis:
        raise ConfigError(f"--api {args.api!r}: expected one of {', '.join(data.apis)}")
    return data.apis[args.api.lower()]


def _listing(data: PlanData) -> str:
    models = render(
        ["PRESET", "PARAMS", "LAYERS", "KV HEADS", "HEAD DIM", "MAX CONTEXT"],
        [
            [
                m.name,
                f"{m.params_b:g} B",
                str(m.layers),
                str(m.kv_heads),
                str(m.head_dim),
                str(m.max_context),
            ]
            for m in data.models.values()
        ],
        right=(1, 2, 3, 4, 5),
    )
    precisions = render(
        ["PRECISION", "BITS/WEIGHT", "NOTE"],
        [[q.name, f"{q.bits:g}", q.note] for q in data.precisions.values()],
        right=(1,),
    )
    gpus = render(
        ["GPU", "NAME", "MEMORY", "$/HOUR"],
        [
            [g.id, g.name, f"{g.memory_gb:g} GB", f"{g.usd_per_hour:.2f}"]
            for g in data.gpus.values()
        ],
        right=(2, 3),
    )
    apis = render(
        ["API", "$/M INPUT", "$/M OUTPUT"],
        [[a.name, f"{a.input_per_m:.2f}", f"{a.output_per_m:.2f}"] for a in data.apis.values()],
        right=(1, 2),
    )
    return "\n\n".join([models, precisions, gpus, apis, _provenance(data)])


def _provenance(data: PlanData) -> str:
    return f"prices as of {data.as_of} from {' + '.join(data.sources)}: {data.note}"


def _usd(value: float) -> str:
    return f"${value:,.2f}"


def _text(plan: Plan, data: PlanData, *, preset: bool) -> str:
    m = plan.model
    shape = ", ".join(
        text
        for text, known in [
            (f"{m.layers} layers", m.layers),
            (f"{m.kv_heads} KV heads", m.kv_heads),
            (f"head dim {m.head_dim}", m.head_dim),
        ]
        if known
    )
    title = f"{m.name}{' (preset)' if preset else ''}: {m.params_b:g} B parameters"
    lines = [title + (f", {shape}" if shape else "")]
    q, kvq = plan.precision, plan.kv_precision
    lines += [
        "",
        "memory (GB = 10^9 bytes)",
        f"  weights   {plan.weights_gb:9.2f} GB  {m.params_b:g} B parameters x {q.bits:g} bits "
        f"({q.name}) / 8",
    ]
    if plan.kv_bytes_per_token is not None:
        seqs = "sequence" if plan.sequences == 1 else "sequences"
        lines += [
            f"  KV cache  {plan.kv_cache_gb:9.2f} GB  {plan.kv_bytes_per_token:,.0f} bytes/token "
            f"x {plan.context:,} tokens x {plan.sequences} {seqs}",
            f"{'':26}bytes/token = 2 (K, V) x {m.layers} layers x {m.kv_heads} KV heads "
            f"x {m.head_dim} head dim x {kvq.bits / 8:g} bytes ({kvq.name})",
        ]
        if not plan.sequences_stated:
            lines.append(
                f"{'':26}!! ONE sequence at once, whatever the load: no --sequences given "
                "(see SEQS and the notes)"
            )
    lines.append(
        f"  total     {plan.total_gb:9.2f} GB  each GPU gives {plan.headroom:.0%} of its memory "
        "to weights and KV cache"
    )
    costed = plan.load is not None
    counted = plan.kv_bytes_per_token is not None
    headers = ["GPU", "MEMORY", "GPUS", "USABLE", "$/HOUR", "$/MONTH"]
    if counted:
        headers.insert(4, "SEQS")
    if costed:
        headers.append("BREAK-EVEN REQ/DAY")
    rows = []
    for fit in plan.fits:
        row = [
            fit.gpu.name,
            f"{fit.gpu.memory_gb:g} GB",
            str(fit.count) if fit.count else "no fit",
            f"{fit.usable_gb:.1f} GB" if fit.usable_gb is not None else "-",
            f"{fit.gpu.usd_per_hour:.2f}",
            _usd(fit.monthly_usd) if fit.monthly_usd is not None else "-",
        ]
        if counted:
            row.insert(4, "-" if fit.max_sequences is None else f"{fit.max_sequences:,}")
        if costed:
            b = fit.break_even_requests_per_day
            row.append("-" if b is None else ("never" if math.isinf(b) else f"{b:,.0f}"))
        rows.append(row)
    lines += ["", render(headers, rows, right=tuple(range(1, len(headers))))]
    lines.append(
        "  GPUS: the smallest tensor-parallel size (1, 2, 4, 8) that fits; "
        "$/MONTH: $/hour x GPUs x 730 h"
    )
    if counted:
        lines.append(
            f"  SEQS: sequences of {plan.context:,} tokens the usable memory holds at once "
            "beside the weights"
        )
    if plan.load is not None and plan.api is not None:
        lines += ["", *_cost_lines(plan)]
    if plan.notes:
        lines += ["", "notes", *(f"  - {note}" for note in plan.notes)]
    lines += ["", _provenance(data)]
    return "\n".join(lines)


def _cost_lines(plan: Plan) -> list[str]:
    load, api = plan.load, plan.api
    assert load is not None and api is not None and plan.api_monthly_usd is not None
    per_request = plan.api_cost_per_request or 0.0
    label = "stated prices" if api.name == "stated" else f"{api.name}, example prices"
    lines = [
        f"cost ({load.requests_per_day:,.0f} requests/day x {load.input_tokens:,} input + "
        f"{load.output_tokens:,} output tokens; a month = 730 h = 30.4 days)",
        f"  API ({label}: ${api.input_per_m:.2f} in / ${api.output_per_m:.2f} out per M tokens): "
        f"${per_request:.6f}/request, {_usd(plan.api_monthly_usd)}/month",
    ]
    best = plan.cheapest
    if best is None or best.monthly_usd is None or best.count is None:
        return [*lines, "  self-hosting: no listed GPU fits"]
    lines.append(
        f"  self-hosting, cheapest fit: {best.count} x {best.gpu.name} at "
        f"${best.gpu.usd_per_hour:.2f}/h x 730 h = {_usd(best.monthly_usd)}/month"
    )
    b = best.break_even_requests_per_day
    if b is None or math.isinf(b):
        lines.append("  break-even: never (the API costs nothing per request)")
    else:
        cheaper = "self-hosting" if load.requests_per_day > b else "the API"
        lines.append(f"  break-even: {b:,.0f} requests/day; at this load {cheaper} is cheaper")
    lines.append(
        "  not checked: whether that many GPUs can serve this load; measure with a benchmark"
    )
    return lines

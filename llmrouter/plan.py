"""Self-hosting arithmetic behind ``llmrouter plan``: memory, GPU count, monthly cost.

Every number comes from a pure function of its inputs, so the arithmetic can be checked by hand:

* weights: ``parameters x bits per weight / 8`` bytes;
* KV cache: ``2 (K and V) x layers x KV heads x head dim x bytes per element`` bytes per token,
  times the context and the number of sequences held at once (the concurrency: requests being
  generated together). Stated, the plan is sized for it; not stated, the plan is sized for one
  sequence and says so loudly, with how many sequences each fit has room for;
* GPUs: the smallest tensor-parallel size (1, 2, 4 or 8) whose memory, times a headroom factor
  (the share left for weights and KV cache after activations and the CUDA context), holds both;
* cost: ``$/GPU-hour x GPUs x 730`` hours a month, against an API's ``$/M tokens`` for a stated
  load, with the load (requests a day) at which the two cost the same.

GB here means 10^9 bytes; GPU capacities are the nominal ones (80 GB for an H100), which errs on
the safe side. GPU specs, example prices and model presets are data (``llmrouter/data/plan.json``);
:func:`load_data` merges a user's file over them.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from llmrouter.errors import ConfigError

__all__ = [
    "DAYS_PER_MONTH",
    "HOURS_PER_MONTH",
    "TP_SIZES",
    "ApiPrice",
    "Gpu",
    "GpuFit",
    "Load",
    "ModelShape",
    "Plan",
    "PlanData",
    "Precision",
    "api_cost_per_request",
    "break_even_requests_per_day",
    "gpus_needed",
    "kv_bytes_per_token",
    "kv_cache_gb",
    "load_data",
    "make_plan",
    "merge_data",
    "monthly_api_cost",
    "monthly_gpu_cost",
    "parse_count",
    "weights_gb",
]

HOURS_PER_MONTH = 730.0  # 365 * 24 / 12, the figure cloud price sheets use
DAYS_PER_MONTH = HOURS_PER_MONTH / 24
TP_SIZES = (1, 2, 4, 8)  # tensor parallelism within one 8-GPU node


# ---------------------------------------------------------------------------------------------
# The arithmetic


def weights_gb(params_b: float, bits_per_weight: float) -> float:
    """Memory for the weights in GB: billions of parameters x bits per weight / 8."""
    return params_b * bits_per_weight / 8


def kv_bytes_per_token(
    layers: int, kv_heads: int, head_dim: int, bytes_per_element: float
) -> float:
    """KV-cache bytes for one token: 2 (K and V) x layers x KV heads x head dim x bytes."""
    return 2 * layers * kv_heads * head_dim * bytes_per_element


def kv_cache_gb(bytes_per_token: float, context: int, sequences: int = 1) -> float:
    """KV-cache memory in GB for ``sequences`` sequences of ``context`` tokens each."""
    return bytes_per_token * context * sequences / 1e9


def gpus_needed(
    required_gb: float, memory_gb: float, headroom: float, sizes: tuple[int, ...] = TP_SIZES
) -> int | None:
    """The smallest tensor-parallel size whose usable memory holds ``required_gb``.

    Usable memory is ``count x memory_gb x headroom``; ``None`` when even the largest size
    is too small.
    """
    for count in sizes:
        if count * memory_gb * headroom >= required_gb:
            return count
    return None


def monthly_gpu_cost(usd_per_hour: float, count: int, hours: float = HOURS_PER_MONTH) -> float:
    """Dollars a month for ``count`` GPUs running all month."""
    return usd_per_hour * count * hours


@dataclass(frozen=True)
class Load:
    """A steady load: requests a day and tokens per request."""

    requests_per_day: float
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class ApiPrice:
    """An API's list price in dollars per million input and output tokens."""

    name: str
    input_per_m: float
    output_per_m: float


def api_cost_per_request(load: Load, price: ApiPrice) -> float:
    """Dollars one request costs on the API."""
    return (load.input_tokens * price.input_per_m + load.output_tokens * price.output_per_m) / 1e6


def monthly_api_cost(load: Load, price: ApiPrice) -> float:
    """Dollars a month the load costs on the API (730 hours = 30.42 days)."""
    return load.requests_per_day * DAYS_PER_MONTH * api_cost_per_request(load, price)


def break_even_requests_per_day(monthly_self_host_usd: float, cost_per_request: float) -> float:
    """Requests a day at which the API costs as much as self-hosting (inf for a free API)."""
    if cost_per_request <= 0:
        return math.inf
    return monthly_self_host_usd / (DAYS_PER_MONTH * cost_per_request)


def parse_count(text: str) -> float:
    """Billions of parameters from ``"8"``, ``"8b"``, ``"70B"``, ``"135m"`` or ``"1.5t"``."""
    raw = text.strip().lower()
    scale = {"k": 1e-6, "m": 1e-3, "b": 1.0, "t": 1e3}.get(raw[-1:])
    number = raw[:-1] if scale is not None else raw
    try:
        value = float(number) * (scale or 1.0)
    except ValueError:
        raise ConfigError(
            f"--params {text!r}: expected billions of parameters, like 8, 8b, 70B or 135M"
        ) from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"--params {text!r}: expected a positive number")
    return value


# ---------------------------------------------------------------------------------------------
# The data: GPUs, prices, precisions, model presets


@dataclass(frozen=True)
class Gpu:
    """A GPU model: its nominal memory and an hourly price for one GPU."""

    id: str
    name: str
    memory_gb: float
    usd_per_hour: float


@dataclass(frozen=True)
class Precision:
    """A weight format and its effective bits per weight (quantization scales included)."""

    name: str
    bits: float
    note: str = ""


@dataclass(frozen=True)
class ModelShape:
    """What the arithmetic needs to know about a model (``None``: not known)."""

    name: str
    params_b: float
    layers: int | None = None
    kv_heads: int | None = None
    head_dim: int | None = None
    max_context: int | None = None


@dataclass(frozen=True)
class PlanData:
    """GPU specs and prices, API prices, precisions and model presets, with their provenance."""

    gpus: dict[str, Gpu]
    apis: dict[str, ApiPrice]
    precisions: dict[str, Precision]
    models: dict[str, ModelShape]
    as_of: str
    note: str
    sources: tuple[str, ...]


def merge_data(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` over ``base``: tables merge entry by entry, and entries field by field.

    So ``{"gpus": {"h100-80gb": {"usd_per_hour": 2.1}}}`` changes one price and keeps the rest.
    """
    merged = dict(base)
    for key, value in override.items():
        old = merged.get(key)
        if isinstance(old, dict) and isinstance(value, dict):
            table = dict(old)
            for name, entry in value.items():
                current = table.get(name)
                if isinstance(current, dict) and isinstance(entry, dict):
                    table[name] = {**current, **entry}
                else:
                    table[name] = entry
            merged[key] = table
        else:
            merged[key] = value
    return merged


def _number(where: str, entry: dict[str, Any], key: str, *, positive: bool = True) -> float:
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where}: {key!r} must be a number, got {value!r}")
    if value < 0 or (positive and value == 0):
        raise ConfigError(f"{where}: {key!r} must be positive, got {value!r}")
    return float(value)


def _optional_int(where: str, entry: dict[str, Any], key: str) -> int | None:
    if entry.get(key) is None:
        return None
    value = _number(where, entry, key)
    if value != int(value):
        raise ConfigError(f"{where}: {key!r} must be a whole number, got {value!r}")
    return int(value)


def _table(raw: dict[str, Any], key: str) -> dict[str, dict[str, Any]]:
    table = raw.get(key, {})
    if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
        raise ConfigError(f"plan data: {key!r} must be an object of objects")
    return table


def _build(raw: dict[str, Any], sources: tuple[str, ...]) -> PlanData:
    gpus = {
        gid.lower(): Gpu(
            gid.lower(),
            str(e.get("name", gid)),
            _number(f"gpus.{gid}", e, "memory_gb"),
            _number(f"gpus.{gid}", e, "usd_per_hour", positive=False),
        )
        for gid, e in _table(raw, "gpus").items()
    }
    apis = {
        name.lower(): ApiPrice(
            name.lower(),
            _number(f"apis.{name}", e, "input_per_m", positive=False),
            _number(f"apis.{name}", e, "output_per_m", positive=False),
        )
        for name, e in _table(raw, "apis").items()
    }
    precisions = {
        name.lower(): Precision(
            name.lower(), _number(f"precisions.{name}", e, "bits"), str(e.get("note", ""))
        )
        for name, e in _table(raw, "precisions").items()
    }
    models = {
        name.lower(): ModelShape(
            name.lower(),
            _number(f"models.{name}", e, "params_b"),
            _optional_int(f"models.{name}", e, "layers"),
            _optional_int(f"models.{name}", e, "kv_heads"),
            _optional_int(f"models.{name}", e, "head_dim"),
            _optional_int(f"models.{name}", e, "max_context"),
        )
        for name, e in _table(raw, "models").items()
    }
    return PlanData(
        gpus, apis, precisions, models, str(raw.get("as_of", "")), str(raw.get("note", "")), sources
    )


def load_data(override: str | Path | None = None) -> PlanData:
    """The packaged data, with ``override`` (a JSON file of the same shape) merged over it.

    Raises:
        ConfigError: the file cannot be read, is not JSON, or has a wrong value.
    """
    packaged = resources.files("llmrouter").joinpath("data/plan.json")
    raw: dict[str, Any] = json.loads(packaged.read_text(encoding="utf-8"))
    sources = ["llmrouter/data/plan.json"]
    if override is not None:
        try:
            user = json.loads(Path(override).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"--prices {override}: cannot read it ({exc.strerror})") from exc
        except ValueError as exc:
            raise ConfigError(f"--prices {override}: not valid JSON ({exc})") from exc
        if not isinstance(user, dict):
            raise ConfigError(f"--prices {override}: expected a JSON object")
        raw = merge_data(raw, user)
        sources.append(str(override))
    return _build(raw, tuple(sources))


# ---------------------------------------------------------------------------------------------
# A whole plan


@dataclass(frozen=True)
class GpuFit:
    """How one GPU model does: how many it takes, what that costs, where it breaks even."""

    gpu: Gpu
    count: int | None  # None: does not fit on the largest tensor-parallel size
    usable_gb: float | None
    monthly_usd: float | None
    break_even_requests_per_day: float | None
    #: How many sequences of the plan's context the usable memory holds at once, beside the
    #: weights (``None``: the KV cache is not counted, or the GPU does not fit).
    max_sequences: int | None = None


@dataclass(frozen=True)
class Plan:
    """The result of :func:`make_plan`, with every assumption it rests on."""

    model: ModelShape
    precision: Precision
    kv_precision: Precision
    context: int
    sequences: int
    headroom: float
    weights_gb: float
    kv_bytes_per_token: float | None
    kv_cache_gb: float
    total_gb: float
    fits: list[GpuFit]
    load: Load | None = None
    api: ApiPrice | None = None
    api_cost_per_request: float | None = None
    api_monthly_usd: float | None = None
    cheapest: GpuFit | None = None
    notes: list[str] = field(default_factory=list)
    #: Whether ``sequences`` was stated; otherwise the plan holds one sequence (see ``notes``).
    sequences_stated: bool = True

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (infinite break-evens become ``None``)."""

        def clean(value: Any) -> Any:
            if isinstance(value, float) and not math.isfinite(value):
                return None
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items()}
            if isinstance(value, list):
                return [clean(v) for v in value]
            return value

        result: dict[str, Any] = clean(asdict(self))
        return result


def make_plan(
    model: ModelShape,
    precision: Precision,
    kv_precision: Precision,
    gpus: list[Gpu],
    *,
    context: int,
    sequences: int | None = None,
    headroom: float = 0.9,
    load: Load | None = None,
    api: ApiPrice | None = None,
) -> Plan:
    """Memory, fit and (with a load and an API price) cost for ``model`` on each GPU.

    ``sequences`` is the concurrency to size the KV cache for; ``None`` sizes it for one
    sequence and adds a note (the first) saying so and how many each fit has room for.
    """
    if not 0 < headroom <= 1:  # nan fails this too
        raise ConfigError(f"headroom {headroom}: expected a fraction in (0, 1]")
    stated = sequences is not None
    sequences = 1 if sequences is None else sequences
    if context <= 0 or sequences <= 0:
        raise ConfigError("context and sequences must be positive")
    _check_finite(load, api)
    notes: list[str] = []
    weights = weights_gb(model.params_b, precision.bits)
    per_token: float | None = None
    kv = 0.0
    if model.layers and model.kv_heads and model.head_dim:
        per_token = kv_bytes_per_token(
            model.layers, model.kv_heads, model.head_dim, kv_precision.bits / 8
        )
        kv = kv_cache_gb(per_token, context, sequences)
    else:
        notes.append("KV cache not counted: give --layers, --kv-heads and --head-dim (or a preset)")
    if model.max_context and context > model.max_context:
        notes.append(f"context {context} exceeds the model's maximum of {model.max_context}")
    total = weights + kv
    per_request = api_cost_per_request(load, api) if load and api else None
    fits = []
    for gpu in gpus:
        count = gpus_needed(total, gpu.memory_gb, headroom)
        monthly = monthly_gpu_cost(gpu.usd_per_hour, count) if count else None
        usable = count * gpu.memory_gb * headroom if count else None
        room = None
        if usable is not None and per_token:
            room = math.floor((usable - weights) / kv_cache_gb(per_token, context) + 1e-9)
        fits.append(
            GpuFit(
                gpu,
                count,
                usable,
                monthly,
                break_even_requests_per_day(monthly, per_request)
                if monthly is not None and per_request is not None
                else None,
                room,
            )
        )
    fitting = [f for f in fits if f.monthly_usd is not None]
    cheapest = min(fitting, key=lambda f: f.monthly_usd or 0.0) if fitting else None
    if not fitting:
        notes.append(f"fits on no listed GPU with up to {TP_SIZES[-1]} GPUs of one node")
    if not stated and per_token is not None:
        notes.insert(0, _one_sequence_note(cheapest, total, context))
    if model.kv_heads and cheapest and cheapest.count and model.kv_heads < cheapest.count:
        notes.append(
            f"{model.kv_heads} KV heads over {cheapest.count} GPUs: engines replicate KV heads, "
            "so the KV cache takes more memory than counted"
        )
    return Plan(
        model=model,
        precision=precision,
        kv_precision=kv_precision,
        context=context,
        sequences=sequences,
        headroom=headroom,
        sequences_stated=stated,
        weights_gb=weights,
        kv_bytes_per_token=per_token,
        kv_cache_gb=kv,
        total_gb=total,
        fits=fits,
        load=load,
        api=api,
        api_cost_per_request=per_request,
        api_monthly_usd=monthly_api_cost(load, api) if load and api else None,
        cheapest=cheapest,
        notes=notes,
    )


def _check_finite(load: Load | None, api: ApiPrice | None) -> None:
    """A load and prices are finite, non-negative numbers (``nan`` and ``inf`` are refused)."""
    values: list[tuple[str, float]] = []
    if load is not None:
        values += [
            ("requests per day", load.requests_per_day),
            ("input tokens", load.input_tokens),
            ("output tokens", load.output_tokens),
        ]
    if api is not None:
        values += [("API input price", api.input_per_m), ("API output price", api.output_per_m)]
    for what, value in values:
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"{what} {value}: expected a finite number, 0 or more")


def _one_sequence_note(cheapest: GpuFit | None, total: float, context: int) -> str:
    """The loud note of a plan whose concurrency was not stated."""
    head = (
        f"SIZED FOR ONE SEQUENCE: the KV cache holds 1 sequence of {context:,} tokens at once, "
        "whatever the load"
    )
    advice = "give --sequences N (the requests served at once) to size for your load"
    if cheapest is None or cheapest.usable_gb is None or cheapest.max_sequences is None:
        return f"{head}; {advice}"
    left = cheapest.usable_gb - total
    return (
        f"{head}; the cheapest fit ({cheapest.count} x {cheapest.gpu.name}) has {left:.2f} GB "
        f"left after it, room for {cheapest.max_sequences} such sequence(s) at once in all "
        f"(column SEQS); {advice}"
    )

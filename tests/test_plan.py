"""The sizing and cost arithmetic of ``llmrouter plan``, against numbers worked out by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from llmrouter.errors import ConfigError
from llmrouter.plan import (
    DAYS_PER_MONTH,
    ApiPrice,
    Gpu,
    Load,
    ModelShape,
    Precision,
    api_cost_per_request,
    break_even_requests_per_day,
    gpus_needed,
    kv_bytes_per_token,
    kv_cache_gb,
    load_data,
    make_plan,
    merge_data,
    monthly_api_cost,
    monthly_gpu_cost,
    parse_count,
    weights_gb,
)

FP16 = Precision("fp16", 16)
FP8 = Precision("fp8", 8)
H100 = Gpu("h100-80gb", "H100 80GB", 80, 2.99)
L4 = Gpu("l4-24gb", "L4 24GB", 24, 0.80)
LLAMA_8B = ModelShape("llama-3.1-8b", 8.03, 32, 8, 128, 131072)
LLAMA_70B = ModelShape("llama-3.1-70b", 70.55, 80, 8, 128, 131072)


def test_weights() -> None:
    assert weights_gb(8.03, 16) == pytest.approx(16.06)  # 8.03e9 x 2 bytes
    assert weights_gb(70.55, 8) == pytest.approx(70.55)  # one byte a weight
    assert weights_gb(70, 4.25) == pytest.approx(37.1875)  # 70 x 4.25 / 8
    assert weights_gb(7.62, 4.85) == pytest.approx(4.619625)


def test_kv_cache() -> None:
    # Llama 3.1 8B: 2 x 32 layers x 8 KV heads x 128 x 2 bytes = 131,072 bytes (128 KiB).
    assert kv_bytes_per_token(32, 8, 128, 2) == 131072
    # Llama 3.1 70B: 2 x 80 x 8 x 128 x 2 = 327,680; with an fp8 cache, half.
    assert kv_bytes_per_token(80, 8, 128, 2) == 327680
    assert kv_bytes_per_token(80, 8, 128, 1) == 163840
    # Qwen2.5 7B (4 KV heads, 28 layers): 57,344 bytes.
    assert kv_bytes_per_token(28, 4, 128, 2) == 57344
    assert kv_cache_gb(131072, 8192) == pytest.approx(1.073741824)  # exactly 1 GiB
    assert kv_cache_gb(57344, 32768, 4) == pytest.approx(7.516192768)


def test_gpus_needed_is_the_smallest_power_of_two_that_fits() -> None:
    assert gpus_needed(17.13, 80, 0.9) == 1
    assert gpus_needed(72.0, 80, 0.9) == 1  # exactly 80 x 0.9
    assert gpus_needed(72.1, 80, 0.9) == 2
    assert gpus_needed(150, 80, 0.9) == 4  # 2 x 72 = 144 is short; 4 x 72 = 288
    assert gpus_needed(86.0, 24, 0.9) == 4  # 21.6 each: 3 would do, but 3 is not a TP size
    assert gpus_needed(800, 80, 0.9) is None  # more than 8 x 72 = 576
    assert gpus_needed(60, 80, 0.5) == 2  # a stingier headroom


def test_costs_and_break_even() -> None:
    assert monthly_gpu_cost(2.99, 1) == pytest.approx(2182.70)  # 2.99 x 730
    assert monthly_gpu_cost(0.80, 4) == pytest.approx(2336.0)
    load = Load(requests_per_day=10_000, input_tokens=1000, output_tokens=250)
    api = ApiPrice("gpt-4o-mini", 0.15, 0.60)
    # 1000 x 0.15 / 1e6 + 250 x 0.60 / 1e6 = 0.00015 + 0.00015
    assert api_cost_per_request(load, api) == pytest.approx(0.0003)
    # 10,000 a day x 30.4167 days x $0.0003 = $91.25
    assert round(DAYS_PER_MONTH, 4) == 30.4167
    assert monthly_api_cost(load, api) == pytest.approx(91.25)
    # $292 a month (an RTX 4090 at $0.40) / (30.4167 x $0.0003) = 32,000 requests a day
    assert break_even_requests_per_day(292.0, 0.0003) == pytest.approx(32_000)
    assert break_even_requests_per_day(292.0, 0.0) == math.inf


def test_parse_count() -> None:
    assert parse_count("8") == 8
    assert parse_count("8B") == 8
    assert parse_count("135m") == pytest.approx(0.135)
    assert parse_count(" 1.5t ") == 1500
    for bad in ("lots", "-3b", "0", "nan"):
        with pytest.raises(ConfigError):
            parse_count(bad)


def test_make_plan_puts_it_together() -> None:
    load = Load(10_000, 1000, 250)
    plan = make_plan(
        LLAMA_70B,
        FP8,
        FP16,
        [H100, L4],
        context=8192,
        sequences=1,
        load=load,
        api=ApiPrice("x", 0.15, 0.6),
    )
    assert plan.weights_gb == pytest.approx(70.55)
    assert plan.kv_cache_gb == pytest.approx(327680 * 8192 / 1e9)  # 2.684 GB
    assert plan.total_gb == pytest.approx(73.234354)
    h100, l4 = plan.fits
    assert (h100.count, l4.count) == (2, 4)  # 73.2 GB: > 72 on one H100; > 43.2 on two L4s
    assert h100.usable_gb == pytest.approx(144.0) and l4.usable_gb == pytest.approx(86.4)
    assert h100.monthly_usd == pytest.approx(2 * 2.99 * 730)
    assert plan.cheapest is l4 and l4.monthly_usd == pytest.approx(2336.0)
    assert l4.break_even_requests_per_day == pytest.approx(2336.0 / (DAYS_PER_MONTH * 0.0003))
    assert plan.api_monthly_usd == pytest.approx(91.25)
    assert plan.notes == []  # one sequence, as stated
    # Room beside the 70.55 GB of weights, 2.684 GB a sequence: (144 - 70.55) / 2.684 = 27.4.
    assert (h100.max_sequences, l4.max_sequences) == (27, 5)  # (86.4 - 70.55) / 2.684 = 5.9
    data = plan.as_dict()
    assert json.loads(json.dumps(data))["fits"][1]["count"] == 4


def test_make_plan_notes_what_it_could_not_count() -> None:
    bare = make_plan(ModelShape("custom", 8), FP16, FP16, [H100], context=4096)
    assert bare.kv_bytes_per_token is None and bare.kv_cache_gb == 0
    assert bare.total_gb == pytest.approx(16.0)
    assert "KV cache not counted" in bare.notes[0]
    huge = make_plan(LLAMA_8B, FP16, FP16, [L4], context=200_000, sequences=40)
    assert huge.fits[0].count is None and huge.cheapest is None
    assert any("exceeds the model's maximum" in n for n in huge.notes)
    assert any("fits on no listed GPU" in n for n in huge.notes)
    free = make_plan(
        LLAMA_8B,
        FP16,
        FP16,
        [H100],
        context=8192,
        sequences=1,
        load=Load(1, 1, 1),
        api=ApiPrice("f", 0, 0),
    )
    assert free.fits[0].break_even_requests_per_day == math.inf
    assert free.as_dict()["fits"][0]["break_even_requests_per_day"] is None  # JSON has no inf
    with pytest.raises(ConfigError):
        make_plan(LLAMA_8B, FP16, FP16, [H100], context=8192, headroom=1.5)


def test_packaged_data_has_the_promised_gpus_and_presets() -> None:
    data = load_data()
    assert {g.name for g in data.gpus.values()} >= {
        "H100 80GB", "H200 141GB", "A100 80GB", "A100 40GB", "L40S 48GB", "L4 24GB",
        "A10G 24GB", "RTX 4090 24GB",
    }  # fmt: skip
    assert data.models["llama-3.1-8b"] == LLAMA_8B
    assert data.models["qwen2.5-7b"].kv_heads == 4
    assert {"fp16", "fp8", "int8", "gguf-q4_k_m", "gptq-4bit", "awq-4bit"} <= set(data.precisions)
    assert data.as_of and "EXAMPLE" in data.note


def test_merge_data_merges_tables_entry_by_entry() -> None:
    base = {"as_of": "a", "gpus": {"x": {"memory_gb": 80, "usd_per_hour": 3.0}}}
    merged = merge_data(base, {"as_of": "b", "gpus": {"x": {"usd_per_hour": 1.0}, "y": {}}})
    assert merged == {
        "as_of": "b",
        "gpus": {"x": {"memory_gb": 80, "usd_per_hour": 1.0}, "y": {}},
    }
    assert base["gpus"]["x"]["usd_per_hour"] == 3.0  # not modified in place


def test_load_data_with_a_file(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"models": {"tiny": {"params_b": 1, "layers": 2}}}))
    data = load_data(good)
    assert data.models["tiny"] == ModelShape("tiny", 1.0, 2)
    assert data.sources == ("llmrouter/data/plan.json", str(good))
    for content, message in [
        ("not json", "not valid JSON"),
        ("[1]", "expected a JSON object"),
        ('{"gpus": {"z": {"memory_gb": "lots", "usd_per_hour": 1}}}', "must be a number"),
        ('{"gpus": {"z": {"memory_gb": 0, "usd_per_hour": 1}}}', "must be positive"),
        ('{"models": {"m": {"params_b": 1, "layers": 2.5}}}', "whole number"),
        ('{"apis": []}', "object of objects"),
    ]:
        bad = tmp_path / "bad.json"
        bad.write_text(content)
        with pytest.raises(ConfigError, match=message):
            load_data(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_data(tmp_path / "missing.json")


A100 = Gpu("a100-80gb", "A100 80GB", 80, 1.79)


def test_an_unstated_concurrency_is_said_loudly() -> None:
    """The issue's example: 70B fp16 on 2x A100 80GB leaves 0.22 GB, so no second sequence."""
    load = Load(10_000, 1000, 250)
    plan = make_plan(LLAMA_70B, FP16, FP16, [A100], context=8192, load=load)
    assert not plan.sequences_stated and plan.sequences == 1
    fit = plan.fits[0]
    assert fit.count == 2 and fit.usable_gb is not None
    assert fit.usable_gb - plan.total_gb == pytest.approx(0.22, abs=0.005)
    assert fit.max_sequences == 1  # (144 - 141.1) / 2.684 = 1.08: not even a second one
    assert plan.notes[0].startswith("SIZED FOR ONE SEQUENCE")
    assert "0.22 GB" in plan.notes[0] and "room for 1" in plan.notes[0]
    assert "--sequences" in plan.notes[0]
    assert plan.as_dict()["sequences_stated"] is False


def test_a_stated_concurrency_sizes_the_kv_cache() -> None:
    plan = make_plan(LLAMA_70B, FP16, FP16, [A100], context=8192, sequences=32)
    assert plan.sequences_stated
    assert plan.kv_cache_gb == pytest.approx(32 * 327680 * 8192 / 1e9)  # 85.9 GB
    fit = plan.fits[0]
    assert fit.count == 4  # 227 GB: more than 2 x 72, within 4 x 72
    assert fit.max_sequences is not None and fit.max_sequences >= 32  # (288 - 141.1) / 2.684
    assert fit.max_sequences == 54
    assert not any("ONE SEQUENCE" in note for note in plan.notes)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_make_plan_refuses_non_finite_numbers(bad: float) -> None:
    price = ApiPrice("x", 0.15, 0.6)
    for load, api in [(Load(bad, 1000, 250), price), (Load(1, 1, 1), ApiPrice("x", bad, 0.6))]:
        with pytest.raises(ConfigError, match="finite"):
            make_plan(LLAMA_8B, FP16, FP16, [H100], context=8192, load=load, api=api)
    with pytest.raises(ConfigError, match="headroom"):
        make_plan(LLAMA_8B, FP16, FP16, [H100], context=8192, headroom=bad)


@pytest.mark.parametrize(
    "option", ["--requests-per-day", "--headroom", "--api-input-price", "--api-output-price"]
)
@pytest.mark.parametrize("bad", ["nan", "inf", "-inf", "NaN", "Infinity"])
def test_plan_command_refuses_non_finite_numbers(
    option: str, bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from llmrouter.cli import main

    # Valid values first; the bad one, given last, wins (argparse keeps the last).
    args = ["plan", "llama-3.1-8b", "--requests-per-day", "100"]
    args += ["--api-input-price", "1", "--api-output-price", "1", f"{option}={bad}"]
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2
    err = capsys.readouterr()
    assert f"argument {option}: {bad!r} is not a finite number" in err.err
    assert "$nan" not in err.out and "$inf" not in err.out


def test_plan_command_prints_the_concurrency_warning(capsys: pytest.CaptureFixture[str]) -> None:
    from llmrouter.cli import main

    assert main(["plan", "llama-3.1-70b", "--gpu", "a100-80gb", "--requests-per-day", "10000"]) == 0
    out = capsys.readouterr().out
    assert "!! ONE sequence at once" in out and "SEQS" in out
    assert "SIZED FOR ONE SEQUENCE" in out
    assert main(["plan", "llama-3.1-70b", "--gpu", "a100-80gb", "--concurrency", "32"]) == 0
    out = capsys.readouterr().out
    assert "x 32 sequences" in out and "ONE sequence" not in out and "SIZED FOR" not in out

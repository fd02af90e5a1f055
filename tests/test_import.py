"""``import llmrouter`` stays light: no optional dependency is loaded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

HEAVY = [
    "vllm",
    "llama_cpp",
    "botocore",
    "boto3",
    "google",  # google-auth (the vertex extra)
    "openai",
    "anthropic",
    "redis",
    "fastapi",
    "aiohttp",
    "torch",
    "transformers",
    "huggingface_hub",
    "opentelemetry",  # the otel extra: imported only when telemetry is turned on
]


def _loaded_after(code: str) -> set[str]:
    probe = f"import sys, json\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return {name.split(".")[0] for name in json.loads(out.stdout.strip().splitlines()[-1])}


def test_import_loads_no_optional_dependency() -> None:
    loaded = _loaded_after("import llmrouter")
    assert not loaded & set(HEAVY), loaded & set(HEAVY)
    assert "httpx2" not in loaded and "pydantic" not in loaded  # even the core loads lazily


def test_sync_client_creation_loads_no_optional_dependency() -> None:
    loaded = _loaded_after(
        "from llmrouter import Client\nClient('vllm://127.0.0.1:9, local://smollm2')"
    )
    assert not loaded & set(HEAVY), loaded & set(HEAVY)
    assert "asyncio" not in loaded  # the sync client never pays for the event loop


def test_telemetry_off_loads_no_opentelemetry_even_with_an_event_hook() -> None:
    loaded = _loaded_after(
        "from llmrouter import Client\nClient('http://127.0.0.1:9/v1', on_event=print)\n"
        "Client('http://127.0.0.1:9/v1', telemetry=False)"
    )
    assert "opentelemetry" not in loaded


def test_telemetry_on_loads_opentelemetry() -> None:
    loaded = _loaded_after(
        "from llmrouter import Client\nClient('http://127.0.0.1:9/v1', telemetry=True)"
    )
    assert "opentelemetry" in loaded


def test_vllm_local_client_loads_vllm_only_on_first_use() -> None:
    loaded = _loaded_after("from llmrouter import Client\nClient('vllm+local:///models/x')")
    assert not loaded & set(HEAVY), loaded & set(HEAVY)
    assert "asyncio" not in loaded


def test_public_names_are_sorted_and_importable() -> None:
    import llmrouter

    assert llmrouter.__all__ == sorted(llmrouter.__all__)
    for name in llmrouter.__all__:
        assert getattr(llmrouter, name) is not None


def test_capability_table_in_the_docs_is_current() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "capabilities.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout

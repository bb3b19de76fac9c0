#!/usr/bin/env bash
# Create .venv (if missing) and install lmforge with its dev tools. Idempotent.
# llama-cpp-python compiles from source the first time (about 5 minutes on 2 cores); pip caches
# the wheel, so later setups take seconds. torch is pinned to the CPU build 2.13.0.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
.venv/bin/python -m pip install --quiet --upgrade pip wheel
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[dev]"
echo "lmforge installed in $(pwd)/.venv" >&2

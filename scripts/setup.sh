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
# the bundled quickstart corpus reads Tang/Song poems from Debian's fortunes-zh (nothing downloaded at run time)
if [ ! -f /usr/share/games/fortunes/tang300 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fortunes-zh >/dev/null; } ||
    echo "warning: could not install fortunes-zh; the bundled corpus needs it (apt-get install fortunes-zh)" >&2
fi
echo "lmforge installed in $(pwd)/.venv" >&2

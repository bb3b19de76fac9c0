#!/usr/bin/env bash
# Set up and run the test suite (the fast default selection; add `-m slow` for real-model tests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check src tests benchmarks
.venv/bin/ruff format --check src tests benchmarks
exec .venv/bin/python -m pytest -q "$@"

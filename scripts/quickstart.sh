#!/usr/bin/env bash
# The quick start: set up .venv, generate synthetic rooms, train the tiny model on the CPU,
# evaluate it on held-out scenes against two baselines. Arguments go to scripts/quickstart.py.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m scripts.quickstart "$@"

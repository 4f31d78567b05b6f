#!/usr/bin/env bash
# The quick start: set up .venv (the core; EXTRAS=... adds extras), generate synthetic rooms, train a
# small Efficient-LVSM on the CPU, evaluate it on held-out scenes against two baselines, run the pose
# check and write a video. Arguments go to scripts/quickstart.py.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS=${EXTRAS-} bash scripts/setup.sh
.venv/bin/python -m scripts.quickstart "$@"

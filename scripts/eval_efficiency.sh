#!/usr/bin/env bash
# Latency, memory and FLOPs of Efficient-LVSM and LVSM decoder-only (scripts/benchmark.py):
# full renders, incremental adds through the scene cache, one training step. Paper sizes on a GPU,
# a tiny size on a CPU. Extra arguments go to benchmark.py (e.g. --compile, --runs 50).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
"$PY" -m scripts.benchmark --out experiments/efficiency/benchmark.csv --plot experiments/efficiency/incremental.png "$@"

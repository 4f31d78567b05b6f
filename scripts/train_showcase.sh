#!/usr/bin/env bash
# The showcase model (configs/showcase.yaml): set up .venv (the core), generate its synthetic rooms
# (seed 0) and train on the CPU for hours, resuming where a previous run stopped; then export the
# newest checkpoint as checkpoints/showcase.pt (+ showcase_state.pt) and measure it
# (scripts/showcase_report.py: checkpoints/showcase.json, docs/showcase_*). Run it in the background:
#   nohup bash scripts/train_showcase.sh > showcase.log 2>&1 &
# Arguments go to scripts/train_showcase.py (--continue_shipped: start from the shipped training state;
# key=value overrides). EXTRAS=plots adds matplotlib for the report's figures.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS=${EXTRAS-plots} bash scripts/setup.sh
.venv/bin/python -m scripts.train_showcase "$@"
.venv/bin/python -m scripts.train_showcase --export
.venv/bin/python -m scripts.showcase_report

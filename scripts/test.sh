#!/usr/bin/env bash
# Sets up .venv (scripts/setup.sh, with the test and demo extras) and runs the test suite; extra
# arguments go to pytest. EXTRAS=test skips the demo extra (its tests then skip).
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS=${EXTRAS:-test,demo} bash scripts/setup.sh
exec .venv/bin/python -m pytest -q tests "$@"

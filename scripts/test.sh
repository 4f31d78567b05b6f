#!/usr/bin/env bash
# Sets up a virtual environment in .venv (once) with requirements.txt and runs the test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k cache`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
exec .venv/bin/python -m pytest -q tests "$@"

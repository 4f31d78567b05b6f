#!/usr/bin/env bash
# Creates .venv (once), installs requirements.txt and the project (editable) into it. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
# The project's own packages (editable: the checkout itself), so scripts run by path from anywhere.
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e .

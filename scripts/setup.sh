#!/usr/bin/env bash
# Creates .venv (once) and installs the project (editable: the checkout itself, so scripts run by path
# from anywhere) with its dependencies at the versions CI tests (constraints.txt). Safe to run again.
#   EXTRAS: the optional dependencies to add (pyproject.toml), comma-separated: demo, lpips, repa, plots,
#   test, all; empty: the core only. Default "test". scripts/test.sh adds demo; the quick start needs the core.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
EXTRAS=${EXTRAS-test}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".${EXTRAS:+[$EXTRAS]}"

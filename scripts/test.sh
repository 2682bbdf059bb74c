#!/usr/bin/env bash
# Sets up the pinned test environment (.venv, Python 3.11) and runs the whole test suite.
# Usage: scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements/test.txt
exec .venv/bin/python -m pytest "$@"

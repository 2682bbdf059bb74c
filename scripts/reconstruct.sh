#!/usr/bin/env bash
# Sets up the pinned runtime (.venv, Python 3.11) and runs `python -m vggt_blender reconstruct` with the
# arguments given, e.g.:  scripts/reconstruct.sh ~/photos/shoe -o shoe.npz --blend shoe.blend
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
PY=${PYTHON:-python3.11}
if [ ! -x "$here/.venv/bin/python" ]; then
  "$PY" -m venv "$here/.venv"
fi
"$here/.venv/bin/python" -m pip install -q --disable-pip-version-check -r "$here/requirements/runtime.txt"
PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" exec "$here/.venv/bin/python" -m vggt_blender reconstruct "$@"

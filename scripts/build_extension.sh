#!/usr/bin/env bash
# Builds the installable extension zip into dist/ (or $1) with Blender's own extension tool
# (the blender_ext.py shipped inside the bpy wheel: the same code as `blender --command extension build`).
# Usage: scripts/build_extension.sh [OUTPUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-dist}
PY=${PYTHON:-.venv/bin/python}
TOOL=${BLENDER_EXT:-}
if [ -z "$TOOL" ]; then
  for candidate in .venv/lib/python3*/site-packages/bpy/*/scripts/addons_core/bl_pkg/cli/blender_ext.py; do
    [ -f "$candidate" ] && TOOL=$candidate
  done
fi
if [ -z "$TOOL" ] || [ ! -f "$TOOL" ]; then
  echo "error: blender_ext.py not found (install bpy into .venv, or set BLENDER_EXT=path/to/blender_ext.py)" >&2
  exit 1
fi
mkdir -p "$OUT"   # the tool requires an existing output folder
"$PY" "$TOOL" validate .
"$PY" "$TOOL" build --source-dir . --output-dir "$OUT"
